"""Execution modes: how a strategy runs its model. One class per ``Mode``.

A mode runs one strategy for one request and appends every upstream call it made to the
request's ``Run``. Modes that can stream (``direct``) also stream; the others answer whole.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol

import msgspec
from msgspec import Struct

from conductor.config import BatchStrategy, Settings, VerifiedStrategy
from conductor.errors import ProviderTimeoutError, describe
from conductor.execution.upstream import Upstream
from conductor.providers.base import ProviderResponse
from conductor.providers.batching import MicroBatcher
from conductor.types import CallRecord, CompletionRequest, Mode

CallRole = str  # "answer" | "draft" | "escalation" | "judge" (CallRecord.role)


class Run:
    """What one request's execution shares across modes: its id, deadline (monotonic
    seconds) and the upstream calls made so far (failed ones included, by the executor)."""

    def __init__(self, request_id: str, deadline: float | None) -> None:
        self.request_id = request_id
        self.deadline = deadline
        self.calls: list[CallRecord] = []
        self.started = time.perf_counter()


# Scores a draft in [0, 1] (None: nothing to say). May append its own calls (a judge).
DraftScorer = Callable[[CompletionRequest, str, ProviderResponse, Run], Awaitable[float | None]]


class Answer(Struct, frozen=True):
    """A mode's final response and whether it escalated (the last item of a stream)."""

    resp: ProviderResponse
    escalated: bool = False


class ExecutionMode(Protocol):
    """Runs one strategy: ``run`` answers whole (the final response and whether it
    escalated); ``stream`` yields text deltas, then the ``Answer``. A mode that cannot
    stream yields its whole text as one delta."""

    strategy: str

    async def run(self, request: CompletionRequest, run: Run,
                  role: CallRole = "answer") -> tuple[ProviderResponse, bool]: ...

    def stream(self, request: CompletionRequest, run: Run) -> AsyncIterator[str | Answer]: ...


class _WholeAnswer:
    """``stream`` for modes that answer whole: one delta with the whole text."""

    async def run(self, request: CompletionRequest, run: Run,
                  role: CallRole = "answer") -> tuple[ProviderResponse, bool]:
        raise NotImplementedError

    async def stream(self, request: CompletionRequest,
                     run: Run) -> AsyncIterator[str | Answer]:
        resp, escalated = await self.run(request, run)
        yield resp.text
        yield Answer(resp, escalated)


def _record(upstream: Upstream, strategy: str, model: str, role: CallRole,
            resp: ProviderResponse) -> CallRecord:
    return CallRecord(strategy=strategy, model=model, role=role,  # type: ignore[arg-type]
                      latency_ms=resp.latency_ms, input_tokens=resp.input_tokens,
                      output_tokens=resp.output_tokens, cost_usd=upstream.cost(strategy, resp))


class DirectMode:
    """One call to one model; streams from the provider when asked."""

    def __init__(self, strategy: str, settings: Settings, upstream: Upstream) -> None:
        self.strategy = strategy
        self.model = settings.strategies[strategy].model
        self.upstream = upstream

    async def run(self, request: CompletionRequest, run: Run,
                  role: CallRole = "answer") -> tuple[ProviderResponse, bool]:
        call = self.upstream.call_for(self.strategy, request, run.deadline)
        resp = await self.upstream.complete(self.model, call, run.deadline)
        run.calls.append(_record(self.upstream, self.strategy, self.model, role, resp))
        return resp, False

    async def stream(self, request: CompletionRequest,
                     run: Run) -> AsyncIterator[str | Answer]:
        """Text deltas, then the Answer (its call recorded)."""
        call = self.upstream.call_for(self.strategy, request, run.deadline)
        async for chunk in self.upstream.stream(self.model, call):
            if chunk.final is not None:
                run.calls.append(_record(self.upstream, self.strategy, self.model, "answer",
                                         chunk.final))
                yield Answer(chunk.final)
            elif chunk.delta:
                yield chunk.delta


class BatchMode(_WholeAnswer):
    """Requests of one (task type, strategy) held for the batch window and sent together,
    grouped by their sampling parameters (a batch is one call: it has one temperature).
    A request that shapes its answer (``GenerationParams.shapes_output``) never comes here:
    the decision does not choose a batching strategy for it. The batch call has no single
    request's deadline (provider timeouts bound it); each request stops waiting for it at
    its own."""

    def __init__(self, strategy: str, settings: Settings, upstream: Upstream) -> None:
        st = settings.strategies[strategy]
        assert isinstance(st, BatchStrategy)
        self.strategy = strategy
        self.model = st.model
        self.config = st.batch
        self.upstream = upstream
        # By task type and sampling parameters; made on first use.
        self._batchers: dict[tuple[str, bytes], MicroBatcher] = {}

    async def run(self, request: CompletionRequest, run: Run,
                  role: CallRole = "answer") -> tuple[ProviderResponse, bool]:
        key = (request.task_type,
               msgspec.json.encode(request.params) if request.params is not None else b"")
        batcher = self._batchers.get(key)
        if batcher is None:
            batcher = self._batchers[key] = MicroBatcher(
                lambda c: self.upstream.complete(self.model, c, None),
                window_ms=self.config.window_ms, max_batch=self.config.max_batch,
                simulated_wait=self.upstream.provider_of(self.model).virtual_time)
        left = None if run.deadline is None else max(0.0, run.deadline - time.monotonic())
        try:  # this request stops waiting at its deadline; the batch goes on for the rest
            async with asyncio.timeout(left):
                resp = await batcher.submit(
                    self.upstream.call_for(self.strategy, request, run.deadline))
        except TimeoutError:
            raise ProviderTimeoutError(
                f"{self.strategy}: the batch did not answer before the request's deadline",
                provider=self.model) from None
        run.calls.append(_record(self.upstream, self.strategy, self.model, role, resp))
        return resp, False


class VerifiedMode(_WholeAnswer):
    """Draft with one strategy, score the draft, escalate to another below the acceptance
    score. The scorer's calls (a judge) are part of the run and of its cost."""

    def __init__(self, strategy: str, settings: Settings, draft: ExecutionMode,
                 escalate: ExecutionMode, scorer: DraftScorer) -> None:
        st = settings.strategies[strategy]
        assert isinstance(st, VerifiedStrategy)
        self.strategy = strategy
        self.accept_score = st.verified.accept_score
        self.draft = draft
        self.escalate = escalate
        self.escalate_model = settings.strategies[st.verified.escalate_to].model
        self.scorer = scorer

    async def run(self, request: CompletionRequest, run: Run,
                  role: CallRole = "answer") -> tuple[ProviderResponse, bool]:
        draft, _ = await self.draft.run(request, run, "draft")
        score = await self.scorer(request, self.draft.strategy, draft, run)
        if score is not None and score >= self.accept_score:
            return draft, False
        try:
            final, _ = await self.escalate.run(request, run, "escalation")
        except ProviderTimeoutError as exc:
            if run.deadline is not None and time.monotonic() >= run.deadline:
                # Out of time: the draft is the best answer there is. The escalation was
                # sent all the same, so the trace keeps it.
                run.calls.append(CallRecord(
                    strategy=self.escalate.strategy, model=self.escalate_model,
                    role="escalation", error=describe(exc)))
                return draft, False
            raise
        return final, True


def build_modes(settings: Settings, upstream: Upstream,
                scorer: DraftScorer) -> dict[str, ExecutionMode]:
    """One mode object per configured strategy (verified ones wrap their draft and
    escalation strategies' modes)."""
    modes: dict[str, ExecutionMode] = {}
    for name, st in settings.strategies.items():
        if st.mode == Mode.DIRECT:
            modes[name] = DirectMode(name, settings, upstream)
        elif st.mode == Mode.BATCH:
            modes[name] = BatchMode(name, settings, upstream)
    for name, st in settings.strategies.items():
        if isinstance(st, VerifiedStrategy):
            modes[name] = VerifiedMode(name, settings, modes[st.verified.draft],
                                       modes[st.verified.escalate_to], scorer)
    return modes
