"""The service functions behind the HTTP handlers: one per endpoint, no framework types
beyond what a response needs. Handlers in ``app.py`` stay one call thin."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import msgspec

from conductor.errors import (
    ConductorError,
    InvalidRequestError,
    NotFoundError,
    RateLimitedError,
    UnknownStrategyError,
)
from conductor.metrics import MetricsCollector
from conductor.rate_limiter import RateLimitConfig, RateLimiter, Reservation
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
    Message,
    Reward,
)

ROUTING_MODELS = ("auto", "conductor")
_HINT_HEADERS = {
    "x-conductor-task-type": ("task_type", str),
    "x-conductor-max-latency-ms": ("max_latency_ms", float),
    "x-conductor-min-quality": ("min_quality", float),
    "x-conductor-max-cost-usd": ("max_cost_usd", float),
}
_enc = msgspec.json.Encoder()


def hints_from_headers(headers: Mapping[str, str]) -> dict[str, Any]:
    """Routing hints from X-Conductor-* headers; a bad value names the header."""
    out: dict[str, Any] = {}
    for name, (field, typ) in _HINT_HEADERS.items():
        value = headers.get(name)
        if value is None:
            continue
        try:
            out[field] = typ(value)
        except ValueError:
            raise InvalidRequestError(f"header {name}: {value!r} is not a number",
                                      field=name) from None
    try:
        msgspec.convert(out, RoutingHints)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(f"routing header: {exc}", field="headers") from exc
    return out


class Gateway:
    """Conductor behind HTTP: keys, limits, and the OpenAI wire format."""

    def __init__(self, conductor: Conductor, keys: KeyRing,
                 metrics_file: str | Path | None = None) -> None:
        self.conductor = conductor
        self.keys = keys
        self.limiter = RateLimiter({
            name: RateLimitConfig(requests_per_minute=c.requests_per_minute,
                                  requests_per_hour=c.requests_per_hour,
                                  max_cost_per_hour_usd=c.max_cost_per_hour_usd)
            for name, c in conductor.settings.clients.items()})
        self.started = time.time()
        self.prometheus = PrometheusMetrics(conductor)
        self.metrics = MetricsCollector(
            metrics_file=Path(metrics_file) if metrics_file else None,
            enable_logging=metrics_file is not None, default_cost=conductor.default_cost,
            prometheus=self.prometheus)

        def on_outcome(req: CompletionRequest, decision: Decision, outcome: Any) -> None:
            upstream = sum(c.latency_ms for c in outcome.calls if c.error is None)
            self.metrics.record_outcome(
                task_type=req.task_type, client_id=req.client_id, outcome=outcome,
                explored=decision.explored,
                overhead_ms=outcome.latency_ms - upstream if outcome.calls else None)

        conductor.on_outcome = on_outcome
        conductor.on_reward = self.metrics.record_reward

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
        hints = hints_from_headers(headers)
        body = data.conductor
        if body is not None:
            hints.update({k: v for k, v in msgspec.structs.asdict(body).items()
                          if v is not None and k != "metadata"})
        strategy = self._strategy(data.model)
        metadata = {**(data.metadata or {}), **(body.metadata if body else {})}
        try:
            req = CompletionRequest(
                messages=tuple(Message(role=m.role, content=m.text()) for m in data.messages),
                task_type=hints.get("task_type", "chat"),
                constraints=Constraints(max_latency_ms=hints.get("max_latency_ms"),
                                        min_quality=hints.get("min_quality"),
                                        max_cost_usd=hints.get("max_cost_usd")),
                client_id=client, max_tokens=data.max_completion_tokens or data.max_tokens,
                metadata=metadata)
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(str(exc)) from exc
        return req, strategy

    def native_request(self, data: CompleteRequest, client: str) -> CompletionRequest:
        if not data.prompt and not data.messages:
            raise InvalidRequestError("give 'prompt' or 'messages'", field="prompt")
        return CompletionRequest(
            prompt=data.prompt, messages=tuple(data.messages) if data.messages else None,
            task_type=data.task_type,
            constraints=Constraints(max_latency_ms=data.max_latency_ms,
                                    min_quality=data.min_quality,
                                    max_cost_usd=data.max_cost_usd),
            client_id=client, request_id=data.request_id or "", max_tokens=data.max_tokens,
            metadata=data.metadata)

    def admit(self, req: CompletionRequest, strategy: str | None
              ) -> tuple[Decision, Reservation]:
        """Decide, then reserve the decided strategy's upper-bound cost for the client."""
        decision = self.conductor.decide(req, strategy=strategy)
        bound = self.conductor.cost_upper_bound(decision, req)
        try:
            return decision, self.limiter.acquire(req.client_id, bound)
        except RateLimitedError as exc:
            self.metrics.record_rate_limited(req.client_id, exc.limit)
            raise

    async def run(self, req: CompletionRequest, strategy: str | None) -> CompletionResult:
        """Admit, answer and learn (the native API returns the rewards)."""
        result, learn = await self.run_then_learn(req, strategy)
        return msgspec.structs.replace(result, rewards=tuple(learn()))

    async def run_then_learn(self, req: CompletionRequest, strategy: str | None
                             ) -> tuple[CompletionResult, Callable[[], list[Reward]]]:
        """``run``, with the logging and learning returned to be done after replying."""
        decision, reservation = self.admit(req, strategy)
        cost = 0.0
        try:
            result, learn = await self.conductor.acomplete_then_learn(
                req, strategy=strategy, decision=decision)
            cost = result.outcome.cost_usd
            return result, learn
        finally:
            self.limiter.reconcile(reservation, cost)

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
                        total_tokens=o.input_tokens + o.output_tokens),
            conductor=trace_of(result.decision, o))

    async def stream(self, req: CompletionRequest, strategy: str | None,
                     include_usage: bool) -> tuple[Decision, AsyncIterator[bytes]]:
        """Admit, then an SSE byte stream in OpenAI's chunk format, ending with [DONE] — or
        with an error event when the upstream fails midway."""
        decision, reservation = self.admit(req, strategy)
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
            cost = 0.0
            first = True
            try:
                async for item in self.conductor.astream(req, strategy=strategy,
                                                         decision=decision):
                    if isinstance(item, str):
                        delta = {"role": "assistant", "content": item} if first else {
                            "content": item}
                        first = False
                        yield chunk(delta)
                    elif isinstance(item, CompletionResult):
                        o = item.outcome
                        cost = o.cost_usd
                        yield chunk({}, o.finish_reason,
                                    conductor=msgspec.to_builtins(trace_of(decision, o)))
                        if include_usage:
                            yield event({"id": f"chatcmpl-{rid}",
                                         "object": "chat.completion.chunk",
                                         "created": created, "model": o.model, "choices": [],
                                         "usage": {"prompt_tokens": o.input_tokens,
                                                   "completion_tokens": o.output_tokens,
                                                   "total_tokens": o.input_tokens
                                                   + o.output_tokens}})
                yield b"data: [DONE]\n\n"
            except ConductorError as exc:
                _, type_, code = status_of(exc)
                yield event(error_body(str(exc), type_, None, code))
            finally:
                self.limiter.reconcile(reservation, cost)

        return decision, gen()

    # -- the rest --------------------------------------------------------------------------

    @staticmethod
    def complete_response(result: CompletionResult) -> CompleteResponse:
        return CompleteResponse(request_id=result.request_id, text=result.text,
                                decision=result.decision, outcome=result.outcome,
                                rewards=list(result.rewards))

    async def feedback(self, data: FeedbackRequest) -> tuple[FeedbackResponse, int]:
        rating: Any = data.rating
        reward = await self.conductor.afeedback(data.request_id, rating, data.rater,
                                                pending_ok=data.pending_ok)
        pending = reward.effective_score is None and reward.task_type == ""
        return FeedbackResponse(request_id=data.request_id, score=reward.score,
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
        cards = [ModelCard(id="auto", description="route each request to the cheapest "
                                                  "strategy that meets its constraints")]
        for name, st in s.strategies.items():
            cards.append(ModelCard(id=name, description=f"{st.mode.value} on {st.model}"))
        return ModelList(data=cards)

    def policy(self) -> PolicyView:
        return msgspec.convert(self.conductor.policy_settings(), PolicyView)

    async def update_policy(self, data: PolicyUpdate, actor: str) -> PolicyView:
        changes = {k: v for k, v in msgspec.structs.asdict(data).items() if v is not None}
        new = await asyncio.to_thread(lambda: self.conductor.update_policy(actor, **changes))
        return msgspec.convert(new, PolicyView)

    def stats(self) -> dict[str, Any]:
        """The metrics collector's stats, with the judge, circuits and policy folded in."""
        c = self.conductor
        self.metrics.set_judge(calls=c.counters["judge_calls"], dropped=c.judge_runner.dropped,
                               failed=c.counters["judge_failures"],
                               usd=c.counters["judge_cost_usd"])
        self.metrics.set_circuits(c.circuits_open())
        self.metrics.set_agreement({t: cal.agreement() for t, cal in c.calibrations.items()
                                    if cal.n})
        out = self.metrics.get_stats()
        out["policy"] = c.policy_settings()
        out["router"] = {"retries": c.counters["retries"],
                         "circuits_opened": c.counters["circuit_opened"],
                         "circuits_open": c.circuits_open(),
                         "judge_budget_skipped": c.judge_sampler.budget_skipped,
                         "judge_failed": c.counters["judge_failures"]}
        return out

    async def ready(self) -> tuple[bool, dict[str, Any]]:
        c = self.conductor
        checks: dict[str, Any] = {}
        try:
            await asyncio.wait_for(asyncio.to_thread(c.log_store.flush), 5.0)
            checks["store"] = "ok"
        except Exception as exc:  # any failure means not ready
            checks["store"] = f"error: {exc}"
        available = [s for s in c.settings.strategies if s not in c.unavailable()]
        checks["strategies_available"] = len(available)
        ok = checks["store"] == "ok" and bool(available)
        return ok, checks
