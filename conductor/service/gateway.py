"""The service functions behind the HTTP handlers: one per endpoint, no framework types
beyond what a response needs. Handlers in ``app.py`` stay one call thin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from conductor.errors import (
    ConductorError,
    InvalidRequestError,
    NotFoundError,
    UnknownStrategyError,
)
from conductor.metrics import MetricsCollector
from conductor.router import Conductor
from conductor.service.auth import KeyRing
from conductor.service.errors import error_body, status_of
from conductor.service.prom import PrometheusMetrics
from conductor.service.schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    CompleteRequest,
    CompleteResponse,
    FeedbackRequest,
    FeedbackResponse,
    ModelCard,
    ModelList,
    PolicyUpdate,
    PolicyView,
    RequestView,
    ResponseMessage,
    RoutingHints,
    Usage,
    trace_of,
)
from conductor.types import (
    CompletionRequest,
    CompletionResult,
    Constraints,
    Decision,
    GenerationParams,
    Message,
    Outcome,
)

ROUTING_MODELS = ("auto", "conductor")
_HINT_HEADERS = {
    "x-conductor-task-type": "task_type",
    "x-conductor-max-latency-ms": "max_latency_ms",
    "x-conductor-min-quality": "min_quality",
    "x-conductor-max-cost-usd": "max_cost_usd",
    "x-conductor-quality-target": "quality_target",
}
_enc = msgspec.json.Encoder()


def hints_from_headers(headers: Mapping[str, str]) -> RoutingHints:
    """Routing hints from X-Conductor-* headers, validated as the body's ``conductor``
    object is; a bad value names the header."""
    raw = {field: headers[name] for name, field in _HINT_HEADERS.items() if name in headers}
    try:
        return msgspec.convert(raw, RoutingHints, strict=False)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        header = next((h for h, f in _HINT_HEADERS.items() if f"$.{f}`" in msg), "headers")
        raise InvalidRequestError(f"header {header}: {msg.split(' - at ')[0]}",
                                  field=header) from exc


def merge_hints(body: RoutingHints | None, headers: RoutingHints) -> RoutingHints:
    """The body's hints, with what it leaves unset taken from the headers."""
    if body is None:
        return headers
    return RoutingHints(**{f: v if v is not None else getattr(headers, f)
                           for f, v in msgspec.structs.asdict(body).items()
                           if f != "metadata"}, metadata=body.metadata)


class _Metrics:
    """Feeds the router's outcomes, rewards and refusals to the metrics collector."""

    def __init__(self, metrics: MetricsCollector) -> None:
        self.metrics = metrics

    def on_outcome(self, request: CompletionRequest, decision: Decision,
                   outcome: Outcome) -> None:
        upstream = sum(c.latency_ms for c in outcome.calls if c.error is None)
        clean = bool(outcome.calls) and all(c.error is None for c in outcome.calls)
        self.metrics.record_outcome(  # time lost in failed attempts is not overhead
            task_type=request.task_type, client_id=request.client_id, outcome=outcome,
            explored=decision.explored,
            overhead_ms=outcome.latency_ms - upstream if clean else None)

    def on_reward(self, task_type: str, new: float, old: float | None) -> None:
        self.metrics.record_reward(task_type, new, old)

    def on_rate_limited(self, client_id: str, limit: str) -> None:
        self.metrics.record_rate_limited(client_id, limit)


class Gateway:
    """Conductor behind HTTP: keys, and the OpenAI wire format. Limits and budgets are
    Conductor's own admission step."""

    def __init__(self, conductor: Conductor, keys: KeyRing,
                 metrics_file: str | Path | None = None) -> None:
        self.conductor = conductor
        self.keys = keys
        self.started = time.time()
        self.prometheus = PrometheusMetrics(conductor)
        mon = conductor.settings.monitoring
        self.metrics = MetricsCollector(
            metrics_file=Path(metrics_file) if metrics_file else None,
            enable_logging=metrics_file is not None, default_cost=conductor.default_cost,
            prometheus=self.prometheus, window_s=mon.window_s, interval_s=mon.interval_s,
            history_points=mon.history_points)
        conductor.add_listener(_Metrics(self.metrics))

    # -- requests --------------------------------------------------------------------------

    def _strategy(self, model: str) -> str | None:
        if model in ROUTING_MODELS:
            return None
        if model not in self.conductor.settings.strategies:
            raise UnknownStrategyError(model, [*ROUTING_MODELS,
                                               *self.conductor.settings.strategies])
        return model

    def chat_request(self, data: ChatCompletionRequest, headers: Mapping[str, str],
                     client: str) -> tuple[CompletionRequest, str | None]:
        for field in ("tools", "functions"):
            if getattr(data, field):
                raise InvalidRequestError(
                    f"{field} are not supported: Conductor routes text answers, and tool "
                    "calls would need every candidate model to support them", field=field)
        for i, m in enumerate(data.messages):
            if isinstance(m.content, list):
                other = sorted({p.type for p in m.content if p.type != "text"})
                if other:
                    raise InvalidRequestError(
                        f"messages[{i}]: content of type {', '.join(map(repr, other))} is not "
                        "supported: Conductor routes text (send text parts only)",
                        field=f"messages[{i}].content")
        hints = merge_hints(data.conductor, hints_from_headers(headers))
        strategy = self._strategy(data.model)
        return CompletionRequest(
            messages=tuple(Message(role=m.role, content=m.text()) for m in data.messages),
            task_type=hints.task_type or "chat",
            constraints=Constraints(max_latency_ms=hints.max_latency_ms,
                                    min_quality=hints.min_quality,
                                    max_cost_usd=hints.max_cost_usd,
                                    quality_target=hints.quality_target),
            client_id=client, max_tokens=data.max_completion_tokens or data.max_tokens,
            metadata={**(data.metadata or {}), **hints.metadata},
            params=GenerationParams.of(data)), strategy

    def native_request(self, data: CompleteRequest, client: str) -> CompletionRequest:
        if not data.prompt and not data.messages:
            raise InvalidRequestError("give 'prompt' or 'messages'", field="prompt")
        return CompletionRequest(
            prompt=data.prompt, messages=tuple(data.messages) if data.messages else None,
            task_type=data.task_type,
            constraints=Constraints(max_latency_ms=data.max_latency_ms,
                                    min_quality=data.min_quality,
                                    max_cost_usd=data.max_cost_usd,
                                    quality_target=data.quality_target),
            client_id=client, request_id=data.request_id or "", max_tokens=data.max_tokens,
            metadata=data.metadata, params=data.params)

    async def run(self, req: CompletionRequest, strategy: str | None) -> CompletionResult:
        """Admit, answer and learn (the native API returns the rewards)."""
        _, learn = await self.conductor.acomplete_then_learn(req, strategy=strategy)
        return learn()

    async def run_later(self, req: CompletionRequest, strategy: str | None
                        ) -> CompletionResult:
        """``run``, with the logging and learning queued, to be done after replying."""
        return await self.conductor.acomplete_later(req, strategy=strategy)

    def route(self, data: CompleteRequest, client: str) -> Decision:
        """The decision only (with its propensity); nothing is called or logged."""
        return self.conductor.decide(self.native_request(data, client), strategy=data.strategy)

    @staticmethod
    def headers_of(result: CompletionResult) -> dict[str, str]:
        return {"X-Conductor-Request-Id": result.request_id,
                "X-Conductor-Strategy": result.outcome.strategy,
                "X-Conductor-Cost-Usd": f"{result.outcome.cost_usd:.8f}"}

    @staticmethod
    def chat_completion(result: CompletionResult) -> ChatCompletion:
        o = result.outcome
        return ChatCompletion(
            id=f"chatcmpl-{result.request_id}", object="chat.completion",
            created=int(o.created_at or time.time()), model=o.model,
            choices=[Choice(index=0, message=ResponseMessage(content=result.text),
                            finish_reason=o.finish_reason)],
            usage=Usage(prompt_tokens=o.input_tokens, completion_tokens=o.output_tokens,
                        total_tokens=o.input_tokens + o.output_tokens,
                        estimated=o.cost_estimated),
            conductor=trace_of(result.decision, o))

    async def stream(self, req: CompletionRequest, strategy: str | None,
                     include_usage: bool) -> tuple[Decision, AsyncIterator[bytes]]:
        """Admit (errors raise here, before any byte is sent), then an SSE byte stream in
        OpenAI's chunk format, ending with [DONE] — or with an error event when the
        upstream fails midway."""
        events = self.conductor.astream(req, strategy=strategy)
        decision = await anext(events)
        assert isinstance(decision, Decision)
        # Wait for the first delta before sending anything: a failure before it (every
        # candidate down, the deadline passed) is a proper HTTP error, not a 200 stream.
        try:
            head: list[Any] = [await anext(events)]
        except StopAsyncIteration:
            head = []
        except BaseException:
            await events.aclose()
            raise
        rid = decision.request_id
        created = int(time.time())

        def event(obj: Any) -> bytes:
            return b"data: " + _enc.encode(obj) + b"\n\n"

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            return event({"id": f"chatcmpl-{rid}", "object": "chat.completion.chunk",
                          "created": created, "model": decision.model,
                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                          **extra})

        async def gen() -> AsyncIterator[bytes]:
            first = True

            async def items() -> AsyncIterator[Any]:
                for item in head:
                    yield item
                async for item in events:
                    yield item

            try:
                async for item in items():
                    if isinstance(item, str):
                        delta = {"role": "assistant", "content": item} if first else {
                            "content": item}
                        first = False
                        yield chunk(delta)
                    elif isinstance(item, CompletionResult):
                        o = item.outcome
                        yield chunk({}, o.finish_reason,
                                    conductor=msgspec.to_builtins(trace_of(item.decision, o)))
                        if include_usage:
                            yield event({"id": f"chatcmpl-{rid}",
                                         "object": "chat.completion.chunk",
                                         "created": created, "model": o.model, "choices": [],
                                         "usage": msgspec.to_builtins(Usage(
                                             prompt_tokens=o.input_tokens,
                                             completion_tokens=o.output_tokens,
                                             total_tokens=o.input_tokens + o.output_tokens,
                                             estimated=o.cost_estimated))})
                yield b"data: [DONE]\n\n"
            except ConductorError as exc:
                _, type_, code = status_of(exc)
                yield event(error_body(str(exc), type_, None, code))
            finally:
                await events.aclose()

        return decision, gen()

    # -- the rest --------------------------------------------------------------------------

    @staticmethod
    def complete_response(result: CompletionResult) -> CompleteResponse:
        return CompleteResponse(request_id=result.request_id, text=result.text,
                                decision=result.decision, outcome=result.outcome,
                                rewards=list(result.rewards))

    async def feedback(self, data: FeedbackRequest) -> tuple[FeedbackResponse, int]:
        rating: Any = data.rating  # a number here is refused, with how to send it
        # The completion's id (what the OpenAI SDK shows) names the request too.
        rid = data.request_id.removeprefix("chatcmpl-")
        reward = await self.conductor.afeedback(
            rid, rating, data.rater, stars=data.stars, thumbs=data.thumbs,
            score=data.score, pending_ok=data.pending_ok)
        pending = reward.effective_score is None and reward.task_type == ""
        return FeedbackResponse(request_id=rid, score=reward.score,
                                effective_score=reward.effective_score,
                                status="pending" if pending else "applied"), (
            202 if pending else 200)

    async def request_record(self, request_id: str) -> RequestView:
        rec = await asyncio.to_thread(self.conductor.log_store.get_request, request_id)
        if rec is None:
            raise NotFoundError(f"unknown request id {request_id!r}")
        return RequestView(request_id=rec.request_id, decision=rec.decision,
                           outcome=rec.outcome, rewards=list(rec.rewards), prompt=rec.prompt)

    def models(self) -> ModelList:
        s = self.conductor.settings
        route = "route each request to the cheapest strategy that meets its constraints"
        cards = [ModelCard(id=name, description=route if name == "auto" else f"= auto: {route}")
                 for name in ROUTING_MODELS]
        for name, st in s.strategies.items():
            cards.append(ModelCard(id=name, description=f"{st.mode.value} on {st.model}"))
        return ModelList(data=cards)

    def policy(self) -> PolicyView:
        return msgspec.convert(msgspec.to_builtins(self.conductor.policy_settings()),
                               PolicyView)

    async def update_policy(self, data: PolicyUpdate, actor: str) -> PolicyView:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
        await asyncio.to_thread(lambda: self.conductor.update_policy(actor, **changes))
        return self.policy()

    def stats(self) -> dict[str, Any]:
        """The metrics collector's stats, with the judge, circuits and policy folded in."""
        r = self.conductor.stats()
        self.metrics.set_judge(calls=r.judge_calls, dropped=r.judge_dropped,
                               failed=r.judge_failures, usd=r.judge_cost_usd)
        self.metrics.set_circuits(r.circuits_open)
        self.metrics.set_probes(count=r.probes.get("run", 0) + r.probes.get("failed", 0),
                                usd=r.probes.get("cost_usd", 0.0))
        self.metrics.set_agreement(r.judge_user_agreement)
        out = self.metrics.get_stats()
        # The means above are of the rewards as scored; how the learner reads them:
        out["quality"]["learned"] = r.quality_scale
        out["policy"] = msgspec.to_builtins(self.conductor.policy_settings())
        out["store"] = self.conductor.log_store.write_health()
        out["router"] = {"retries": r.retries, "fallbacks": r.fallbacks,
                         "circuits_opened": r.circuits_opened,
                         "circuits_open": r.circuits_open,
                         "judge_budget_skipped": r.judge_budget_skipped,
                         "judge_failed": r.judge_failures}
        return out

    def series(self) -> dict[str, Any]:
        """Time series for the dashboard, with each task type's quality target and each
        strategy's posterior quality (mean and 95% interval)."""
        c = self.conductor
        return {"interval_s": self.metrics.interval_s, "points": self.metrics.series(),
                "targets": {t: c.target_of(t) for t in c.settings.task_types},
                "posterior": c.quality_intervals(),
                "default_strategy": c.learner.knobs.default_strategy}

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        c = self.conductor
        checks: dict[str, Any] = {}
        store = c.log_store.write_health()
        if not store.get("writable", True):  # real writes fail (a probe commit may not)
            checks["store"] = (f"error: writes failing for {store['failing_for_s']:.0f} s, "
                               f"{store['backlog_rows']} rows waiting")
        else:
            try:
                await asyncio.wait_for(asyncio.to_thread(c.log_store.flush), 5.0)
                checks["store"] = "ok"
            except Exception as exc:  # any failure means not ready
                checks["store"] = f"error: {exc}"
        available = [s for s in c.settings.strategies if s not in c.unavailable()]
        checks["strategies_available"] = len(available)
        ok = checks["store"] == "ok" and bool(available)
        return ok, checks
