"""What happens to an answer: heuristics and evaluators on every one, the judge on a
sampled share in the background, and the score of a verified strategy's draft."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import msgspec
from msgspec import Struct

from conductor.config import Settings
from conductor.errors import JudgeError
from conductor.evaluators.base import Evaluator
from conductor.evaluators.heuristics import heuristic_score, heuristics_for
from conductor.evaluators.judge import Judge, JudgeResult, JudgeRunner, JudgeSampler
from conductor.providers.base import ProviderResponse
from conductor.types import CallRecord, CompletionRequest, Outcome, Reward

log = logging.getLogger("conductor.judge")


class JudgeCounters(Struct, kw_only=True):
    """Since start: judge calls, failures (no answer or no score), spend, self-grading."""

    calls: int = 0
    failures: int = 0
    cost_usd: float = 0.0
    self_graded: int = 0


class _Run(Protocol):
    """The request's execution so far (``conductor.execution.Run``)."""

    request_id: str
    calls: list[CallRecord]


class Evaluation:
    """Turns answers into rewards.

    Args:
        settings: task types (heuristics, labels, judge rates) and the judge's settings.
        evaluators: custom reward sources run on every successful answer.
        judge: the LLM judge, or None when none is configured.
        record_call: stores one judge call row (the log store's ``record_judge_call``).
        calibrate: maps a judge score onto the users' scale, per task type.
        clock: wall-clock seconds.
    """

    def __init__(self, settings: Settings, evaluators: Sequence[Evaluator],
                 judge: Judge | None, *, record_call: Callable[[dict[str, Any]], None],
                 calibrate: Callable[[str, float], float] = lambda task, score: score,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.heuristics = {t: heuristics_for(t, tt.heuristics, tt.labels, tt.max_words)
                           for t, tt in settings.task_types.items()}
        self.evaluators = list(evaluators)
        self.judge = judge
        jc = settings.judge
        self.sampler = JudgeSampler(max_calls_per_hour=jc.max_calls_per_hour,
                                    reference_std=jc.uncertainty_reference_std)
        self.runner = JudgeRunner(workers=jc.workers, queue_size=jc.queue_size)
        self.counters = JudgeCounters()
        self.record_call = record_call
        self.calibrate = calibrate
        self.clock = clock

    def automatic(self, request: CompletionRequest, outcome: Outcome,
                  extra: dict[str, Any]) -> list[Reward]:
        """The task type's heuristic score (the lowest opinion among its heuristics), then
        the evaluators' rewards (none for a failed answer)."""
        heuristic = heuristic_score(self.heuristics[request.task_type], request, outcome, extra)
        found = [heuristic] if heuristic is not None else []
        if outcome.error is None:
            found += [r for ev in self.evaluators
                      if ev.task_types is None or request.task_type in ev.task_types
                      if (r := ev.evaluate(request, outcome, extra)) is not None]
        return found

    def automatic_rewards(self, request: CompletionRequest, outcome: Outcome,
                          extra: dict[str, Any]) -> list[tuple[Reward, bool]]:
        """``automatic``'s rewards stamped with the request's task type, the strategy
        that answered and the time, each with whether the posterior learns it
        (``learned_from``)."""
        now = self.clock()
        stamped = [msgspec.structs.replace(r, created_at=now, task_type=request.task_type,
                                           strategy=outcome.strategy)
                   for r in self.automatic(request, outcome, extra)]
        return [(r, self.learned_from(r)) for r in stamped]

    async def judge_reward(self, request: CompletionRequest, outcome: Outcome,
                           sampling_probability: float) -> Reward:
        """Grade an answer with the judge and give its reward; JudgeError when the judge
        gave no score (counted by ``grade``)."""
        result = await self.grade(request, outcome)
        if result.score is None:
            raise JudgeError(result.error or "no score")
        return Reward(request_id=outcome.request_id, source="judge", score=result.score,
                      sampling_probability=sampling_probability, task_type=request.task_type,
                      strategy=outcome.strategy, created_at=self.clock())

    async def grade(self, request: CompletionRequest, outcome: Outcome) -> JudgeResult:
        """Grade one answer with the judge; counts and stores the call."""
        assert self.judge is not None
        result = await self.judge.grade(request.task_type, request.text(), outcome.text,
                                        outcome.model)
        c = self.counters
        c.calls += 1
        c.cost_usd += result.call.cost_usd
        c.self_graded += int(result.self_graded)
        c.failures += int(result.score is None)
        self.record_call({
            "request_id": outcome.request_id, "created_at": self.clock(),
            "strategy": self.judge.strategy, "model": self.judge.model,
            "score": result.score, "raw_reply": result.raw_reply,
            "cost_usd": result.call.cost_usd, "latency_ms": result.call.latency_ms,
            "error": result.error, "self_graded": int(result.self_graded),
            "answer_chars": len(outcome.text)})
        return result

    async def score_draft(self, request: CompletionRequest, strategy: str,
                          resp: ProviderResponse, run: _Run) -> float | None:
        """A draft's score: the judge's (calibrated; its call joins the run and its cost)
        when a judge is configured and answers, else an evaluator's, else the heuristic."""
        probe = Outcome(request_id=run.request_id, strategy=strategy,
                        model=self.settings.strategies[strategy].model,
                        latency_ms=resp.latency_ms, text=resp.text,
                        finish_reason=resp.finish_reason)
        if self.judge is not None:
            result = await self.grade(request, probe)
            run.calls.append(result.call)
            if result.score is not None:
                return self.calibrate(request.task_type, result.score)
            log.warning("judge failed on a verified draft (%s); using heuristics", result.error)
        rewards = self.automatic(request, probe, resp.extra)
        others = [r for r in rewards if r.source != "heuristic"]
        best = others[0] if others else (rewards[0] if rewards else None)
        return best.score if best is not None else None

    def learned_from(self, reward: Reward) -> bool:
        """Whether the posterior learns from an automatic reward. Not a heuristic's where
        the judge grades a sample of the task type's answers (it is configured, has calls
        to spend and a sample rate): then quality is learned from that sample, users and
        evaluators that know it, and the heuristic's score is kept for audit. A valid
        label or valid JSON passes right and wrong answers alike; counted as quality 1.0
        on every unjudged answer, it made a cheap model look better than a strong one
        (benchmarks/RESULTS.md)."""
        return reward.source != "heuristic" or not (
            self.judge is not None and self.settings.judge.max_calls_per_hour > 0
            and self.settings.task_types[reward.task_type].judge_sample_rate > 0)

    def maybe_judge(self, request: CompletionRequest, outcome: Outcome, posterior_std: float,
                    u: float, deliver: Callable[[Reward], object]) -> bool:
        """Queue a background judge job for a sampled share of answers (more where the
        posterior is wide); ``deliver`` gets its reward. Returns whether it was queued."""
        if self.judge is None or outcome.error is not None:
            return False
        rate = self.settings.task_types[request.task_type].judge_sample_rate
        p = self.sampler.probability(rate, posterior_std)
        if not self.sampler.take(p, u):
            return False

        async def job() -> None:
            deliver(await self.judge_reward(request, outcome, p))

        return self.runner.submit(job)

    def wait_idle(self, timeout: float = 30.0) -> bool:
        return self.runner.wait_idle(timeout)
