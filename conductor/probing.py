"""Probes: exploring a cheap strategy without serving it.

Under a quality target, a strategy still being measured, or one the conservative check
holds back, costs served quality when it is explored by serving it: on RouterBench most of
the learner's spend went to repaying that with the strong model. When such a strategy is
cheap (``[policy] probe_cost_ratio`` of the safe strategy's predicted cost, at most) the
policy serves the safe strategy and names the other as the decision's ``probe``
(``conductor.bandit.policy.TargetSpec``). The probe runs the same request on it after the
answer has gone out, on the judge's workers and within the judge's hourly budget; the
judge grades the probe's answer (and the automatic evaluators score it, as they do a
served one), and the learner learns its quality, latency and tokens. It is logged as a
request of its own (``probe_id``, ``routed_by = "probe"``, propensity 1), left out of the
target's window and of off-policy evaluation; its cost is in the outcomes like any call.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import msgspec
from msgspec import Struct

from conductor.config import Settings
from conductor.errors import JudgeError
from conductor.evaluators.pipeline import Evaluation
from conductor.execution import Executor, Plan
from conductor.learning import Learner
from conductor.storage.base import LogStore
from conductor.types import CompletionRequest, Decision, probe_id

log = logging.getLogger("conductor.probe")


class ProbeCounters(Struct, kw_only=True):
    """Since start: probes queued, run (an answer came back), failed (no answer, or no
    judge score), skipped (the judge's budget or queue was full), and the cost of the
    probed calls (the judge's are in the judge's counters)."""

    queued: int = 0
    run: int = 0
    failed: int = 0
    skipped: int = 0
    cost_usd: float = 0.0


class Prober:
    """Runs a decision's probe in the background and learns from it."""

    def __init__(self, settings: Settings, executor: Executor, evaluation: Evaluation,
                 learner: Learner, store: LogStore, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.executor = executor
        self.evaluation = evaluation
        self.learner = learner
        self.store = store
        self.clock = clock
        self.counters = ProbeCounters()

    def submit(self, request: CompletionRequest, decision: Decision) -> bool:
        """Queue ``decision.probe`` on ``request``; False when there is none to run or the
        judge cannot take it (no judge, budget spent, queue full)."""
        strategy = decision.probe
        if strategy is None or self.evaluation.judge is None:
            return False
        if not self.evaluation.sampler.take(1.0, 0.0):  # the judge's hourly budget
            self.counters.skipped += 1
            return False
        pid = probe_id(decision.request_id)
        st = self.settings.strategies[strategy]
        with self.learner.lock:  # other threads learn meanwhile
            post = self.learner.posteriors[decision.task_type]
            quality = float(post.quality_mean()[post.index[strategy]])
        sample = next((s for s in decision.samples if s.strategy == strategy), None)
        probe = msgspec.structs.replace(
            decision, request_id=pid, strategy=strategy, model=st.model, mode=st.mode,
            routed_by="probe", policy_choice=strategy, propensity=1.0, probe=None,
            held_back=False, explored=True, constraint_relaxed=False, set_aside={},
            predicted_quality=quality, predicted_cost_usd=sample.cost_usd if sample else 0.0,
            created_at=self.clock())
        req = msgspec.structs.replace(request, request_id=pid)

        async def job() -> None:
            attempt = await self.executor.run(req, Plan(request_id=pid, candidates=(strategy,)))
            outcome = attempt.outcome(probe, self.settings, self.clock())
            self.store.record_decision(probe, req)
            self.learner.record_outcome(req.task_type, outcome)
            self.learner.fusion.start(pid, probe.features, served=False)
            self.counters.cost_usd += outcome.cost_usd
            if attempt.resp is None:
                self.counters.failed += 1
                raise attempt.failure
            self.counters.run += 1
            for r, learned in self.evaluation.automatic_rewards(req, outcome,
                                                                attempt.resp.extra):
                (self.learner.add_reward if learned else self.learner.record_only)(r)
            try:
                judged = await self.evaluation.judge_reward(req, outcome, 1.0)
            except JudgeError:
                self.counters.failed += 1
                raise
            self.learner.add_reward(judged)

        if not self.evaluation.runner.submit(job):
            self.counters.skipped += 1
            return False
        self.counters.queued += 1
        return True
