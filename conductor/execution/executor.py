"""The executor: a request's candidates tried in order, whole or streamed, in one path."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping

from msgspec import Struct

from conductor.config import Settings
from conductor.errors import ProviderError, ProviderStreamError
from conductor.execution.health import Health
from conductor.execution.modes import ExecutionMode, Run
from conductor.providers.base import ProviderResponse
from conductor.types import CallRecord, CompletionRequest, Decision, Outcome


class Plan(Struct, kw_only=True, frozen=True):
    """What to try for one request: the candidates in order (the decided strategy, then
    its fallbacks) and the deadline (monotonic seconds) that bounds every attempt.
    ``before_fallback`` is called with a fallback candidate before it is tried (to
    reserve its cost); it may raise to stop there."""

    request_id: str
    candidates: tuple[str, ...]
    deadline: float | None = None
    before_fallback: Callable[[str], None] | None = None


class Attempt:
    """What happened while executing one request."""

    def __init__(self, plan: Plan) -> None:
        self.run = Run(plan.request_id, plan.deadline)
        self.executed = plan.candidates[0]
        self.chain: list[str] = [plan.candidates[0]]
        self.resp: ProviderResponse | None = None
        self.escalated = False
        self.error: str | None = None
        self.last_exc: ProviderError | None = None
        self.started = time.perf_counter()

    @property
    def calls(self) -> list[CallRecord]:
        return self.run.calls

    def succeeded(self, strategy: str, resp: ProviderResponse, escalated: bool) -> None:
        self.executed, self.resp, self.escalated, self.error = strategy, resp, escalated, None

    def failed(self, strategy: str, model: str, exc: ProviderError) -> None:
        self.last_exc = exc
        self.error = f"{type(exc).__name__}: {exc}"
        self.run.calls.append(CallRecord(strategy=strategy, model=model, error=self.error))

    def outcome(self, decision: Decision, settings: Settings, now: float) -> Outcome:
        """What happened, as the record the log and the learner take. Latency is the wall
        time, or the simulated time of the calls when the world is simulated."""
        resp = self.resp
        wall_ms = (time.perf_counter() - self.started) * 1000.0
        ok_calls = [c for c in self.calls if c.error is None]
        simulated = sum(c.latency_ms for c in ok_calls) if resp is not None else 0.0
        latency = max(simulated, wall_ms)
        c = decision.constraints
        return Outcome(
            request_id=decision.request_id, strategy=self.executed,
            model=settings.strategies[self.executed].model, latency_ms=latency,
            input_tokens=sum(cr.input_tokens for cr in ok_calls),
            output_tokens=resp.output_tokens if resp else 0,
            cost_usd=sum(cr.cost_usd for cr in self.calls),
            cost_estimated=bool(resp and resp.usage_estimated), error=self.error,
            fallback_used=len(self.chain) > 1, fallback_chain=tuple(self.chain),
            sla_met=resp is not None and (c.max_latency_ms is None
                                          or latency <= c.max_latency_ms),
            escalated=self.escalated, calls=tuple(self.calls),
            text=resp.text if resp else "", finish_reason=resp.finish_reason if resp else "error",
            created_at=now)


class Executor:
    """Tries a plan's candidates until one answers. A failed candidate is recorded (its
    calls and the error) and the next is tried; a stream falls back only before its
    first delta: once text has gone out, a failure ends the stream with an error."""

    def __init__(self, settings: Settings, modes: Mapping[str, ExecutionMode],
                 health: Health) -> None:
        self.settings = settings
        self.modes = dict(modes)
        self.health = health

    def _candidates(self, plan: Plan, attempt: Attempt) -> Iterator[str]:
        for i, cand in enumerate(plan.candidates):
            if i > 0:
                if plan.before_fallback is not None:
                    plan.before_fallback(cand)
                attempt.chain.append(cand)
                self.health.counters.fallbacks += 1
            yield cand

    def _model(self, strategy: str) -> str:
        return self.settings.strategies[strategy].model

    async def run(self, request: CompletionRequest, plan: Plan) -> Attempt:
        """Execute whole; the attempt says what answered (``resp`` None: every candidate
        failed, ``last_exc`` says why)."""
        attempt = Attempt(plan)
        for cand in self._candidates(plan, attempt):
            try:
                resp, escalated = await self.modes[cand].run(request, attempt.run)
            except ProviderError as exc:
                attempt.failed(cand, self._model(cand), exc)
                continue
            attempt.succeeded(cand, resp, escalated)
            break
        return attempt

    async def stream(self, request: CompletionRequest,
                     plan: Plan) -> AsyncIterator[str | Attempt]:
        """Text deltas, then the Attempt. Modes that cannot stream answer in one delta. A
        stream that ends without its final answer is a failure of that candidate."""
        attempt = Attempt(plan)
        for cand in self._candidates(plan, attempt):
            started = answered = False
            try:
                async for item in self.modes[cand].stream(request, attempt.run):
                    if isinstance(item, str):
                        started = True
                        yield item
                    else:
                        answered = True
                        attempt.succeeded(cand, item.resp, item.escalated)
                if not answered:
                    raise ProviderStreamError(f"{cand}: the stream ended without its answer")
            except ProviderError as exc:
                attempt.failed(cand, self._model(cand), exc)
                if started:
                    attempt.executed = cand
                    break  # text already went out: no silent switch to another model
                continue
            break
        yield attempt
