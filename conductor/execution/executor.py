"""The executor: a request's candidates tried in order, whole or streamed, in one path."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence

from msgspec import Struct

from conductor.config import Settings
from conductor.errors import (
    ProviderError,
    ProviderStreamError,
    ProviderTimeoutError,
    RateLimitedError,
    describe,
)
from conductor.execution.health import Health
from conductor.execution.modes import ExecutionMode, Run
from conductor.providers.base import ProviderResponse
from conductor.types import (
    CallRecord,
    CompletionRequest,
    Decision,
    Outcome,
    estimate_prompt_tokens,
    estimate_tokens,
)

# A call's own timeout set to the time left fires up to a few ms before the deadline by
# time.monotonic() (uvloop's timers run on libuv's cached, millisecond clock). Within this
# much of the deadline it has passed: that timeout was the deadline's, and no candidate
# starts with only milliseconds left.
DEADLINE_SLACK_S = 0.005


class Plan(Struct, kw_only=True, frozen=True):
    """What to try for one request: the candidates in order (the decided strategy, then
    its fallbacks) and the deadline (monotonic seconds) that bounds every attempt.
    ``fallbacks``, if given, orders the candidates after ``candidates``: called only when
    those have all failed (most requests never need it), so it sees the circuits as they
    are then. ``before_fallback`` is awaited with a fallback candidate and what the failed
    ones cost, before it is tried (to reserve its cost); it may raise RateLimitedError to
    stop there."""

    request_id: str
    candidates: tuple[str, ...]
    fallbacks: Callable[[], Sequence[str]] | None = None
    deadline: float | None = None
    before_fallback: Callable[[str, float], Awaitable[None]] | None = None

    def tries(self) -> Iterator[str]:
        yield from self.candidates
        if self.fallbacks is not None:
            yield from self.fallbacks()


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
        self.refused: RateLimitedError | None = None  # a fallback the budget refused
        self.estimated = False  # some tokens were counted by us, not the upstream
        self.started = time.monotonic()

    @property
    def failure(self) -> RateLimitedError | ProviderError:
        """Why no candidate answered: the last one tried failed, or the budget refused
        every fallback left (then RateLimitedError)."""
        exc = self.refused or self.last_exc
        assert exc is not None, "the attempt did not fail"
        return exc

    @property
    def calls(self) -> list[CallRecord]:
        return self.run.calls

    @property
    def cost_so_far(self) -> float:
        """USD the calls made so far cost (failed ones mostly nothing)."""
        return sum(c.cost_usd for c in self.calls)

    def succeeded(self, strategy: str, resp: ProviderResponse, escalated: bool) -> None:
        self.executed, self.resp, self.escalated, self.error = strategy, resp, escalated, None

    def failed(self, strategy: str, model: str, exc: ProviderError,
               usage: tuple[int, int, float] | None = None) -> None:
        """A candidate failed; ``usage``: the (input, output tokens, USD) it used anyway,
        estimated (a stream cut after text went out)."""
        self.last_exc = exc
        self.error = describe(exc)
        tokens_in, tokens_out, usd = usage or (0, 0, 0.0)
        self.estimated |= usage is not None
        self.run.calls.append(CallRecord(strategy=strategy, model=model, error=self.error,
                                         input_tokens=tokens_in, output_tokens=tokens_out,
                                         cost_usd=usd))

    def outcome(self, decision: Decision, settings: Settings, now: float) -> Outcome:
        """What happened, as the record the log and the learner take. Latency is the wall
        time, or the simulated time of the calls when the world is simulated."""
        resp = self.resp
        wall_ms = (time.monotonic() - self.started) * 1000.0
        ok_calls = [c for c in self.calls if c.error is None]
        simulated = sum(c.latency_ms for c in ok_calls) if resp is not None else 0.0
        latency = max(simulated, wall_ms)
        c = decision.constraints
        return Outcome(
            request_id=decision.request_id, strategy=self.executed,
            model=settings.strategies[self.executed].model, latency_ms=latency,
            input_tokens=sum(cr.input_tokens for cr in self.calls),
            output_tokens=resp.output_tokens if resp else sum(
                cr.output_tokens for cr in self.calls),
            cost_usd=self.cost_so_far,
            cost_estimated=bool(resp and resp.usage_estimated) or self.estimated,
            error=self.error,
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

    async def _may_fall_back(self, plan: Plan, attempt: Attempt, cand: str) -> bool:
        """Before a fallback runs: reserve its cost. A refusal skips it (a later, cheaper
        one may still fit); what failed last is what the caller hears."""
        if plan.before_fallback is not None:
            try:
                await plan.before_fallback(cand, attempt.cost_so_far)
            except RateLimitedError as exc:
                attempt.refused = exc
                return False
        attempt.refused = None
        attempt.chain.append(cand)
        self.health.fallbacks += 1
        return True

    def _model(self, strategy: str) -> str:
        return self.settings.strategies[strategy].model

    def _streamed_usage(self, strategy: str, request: CompletionRequest,
                        text: str) -> tuple[int, int, float]:
        """What a cut stream used, estimated: the prompt's tokens and those streamed."""
        tokens_in = estimate_prompt_tokens(request.chat_messages())
        tokens_out = estimate_tokens(text)
        return tokens_in, tokens_out, self.settings.model_of(strategy).cost_usd(tokens_in,
                                                                                 tokens_out)

    @staticmethod
    def _past_deadline(plan: Plan, attempt: Attempt) -> bool:
        """Whether the deadline has passed; if so the failure says so, naming it."""
        if plan.deadline is None or time.monotonic() < plan.deadline - DEADLINE_SLACK_S:
            return False
        budget_ms = (plan.deadline - attempt.started) * 1000.0
        attempt.last_exc = ProviderTimeoutError(
            f"no answer within the request's deadline ({budget_ms:.0f} ms, max_latency_ms); "
            f"tried {', '.join(attempt.chain)}"
            + (f"; last error: {attempt.error}" if attempt.error else ""))
        attempt.error = f"DeadlineExceeded: {attempt.last_exc}"
        return True

    async def run(self, request: CompletionRequest, plan: Plan) -> Attempt:
        """Execute whole; the attempt says what answered (``resp`` None: every candidate
        failed, ``last_exc`` says why). No candidate starts after the deadline."""
        attempt = Attempt(plan)
        for i, cand in enumerate(plan.tries()):
            if i > 0 and not await self._may_fall_back(plan, attempt, cand):
                continue
            try:
                resp, escalated = await self.modes[cand].run(request, attempt.run)
            except ProviderError as exc:
                attempt.failed(cand, self._model(cand), exc)
                if self._past_deadline(plan, attempt):
                    break
                continue
            attempt.succeeded(cand, resp, escalated)
            break
        return attempt

    async def stream(self, request: CompletionRequest,
                     plan: Plan) -> AsyncIterator[str | Attempt]:
        """Text deltas, then the Attempt. Modes that cannot stream answer in one delta. A
        stream that ends without its final answer is a failure of that candidate."""
        attempt = Attempt(plan)
        for i, cand in enumerate(plan.tries()):
            if i > 0 and not await self._may_fall_back(plan, attempt, cand):
                continue
            answered = False
            sent: list[str] = []  # text gone out to the client
            try:
                async for item in self.modes[cand].stream(request, attempt.run):
                    if isinstance(item, str):
                        sent.append(item)
                        yield item
                    else:
                        answered = True
                        attempt.succeeded(cand, item.resp, item.escalated)
                if not answered:
                    raise ProviderStreamError(f"{cand}: the stream ended without its answer")
            except ProviderError as exc:
                if sent:  # text already went out: no silent switch to another model
                    attempt.failed(cand, self._model(cand), exc,
                                   self._streamed_usage(cand, request, "".join(sent)))
                    attempt.executed = cand
                    break
                attempt.failed(cand, self._model(cand), exc)
                if self._past_deadline(plan, attempt):
                    break
                continue
            break
        yield attempt
