"""Wire schemas of the HTTP API (msgspec Structs; Litestar builds the OpenAPI from them).

The chat completions request passes OpenAI's sampling and output parameters to the model
that answers (``GenerationParams``), refuses tools (Conductor routes text answers), and
accepts and ignores the other OpenAI parameters (``logprobs``, ``logit_bias``, ...), so
the official SDKs work unchanged; Conductor's own objects forbid unknown fields.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

from conductor.types import (
    CompletionRequest,
    Decision,
    GenerationParams,
    Message,
    NonNegative,
    Outcome,
    Positive,
    Probability,
    Reward,
    Sampling,
)


class RoutingHints(Struct, kw_only=True, forbid_unknown_fields=True):
    """The ``conductor`` object of a chat completion (the SDK's ``extra_body``)."""

    task_type: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    max_latency_ms: Positive | None = None
    min_quality: Probability | None = None
    max_cost_usd: NonNegative | None = None
    quality_target: Probability | None = None
    metadata: dict[str, Any] = {}


class ContentPart(Struct, kw_only=True):
    type: str
    text: str | None = None


class ChatMessage(Struct, kw_only=True):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class StreamOptions(Struct, kw_only=True):
    include_usage: bool = False


class ChatCompletionRequest(Sampling, kw_only=True, frozen=True):
    """OpenAI's chat completions request. ``model``: "auto" or "conductor" routes; a
    strategy name forces that strategy. The sampling and output parameters (``Sampling``)
    go to the model that answers."""

    model: str = "auto"
    messages: Annotated[list[ChatMessage], Meta(min_length=1)]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Meta(ge=1)] | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    n: Annotated[int, Meta(ge=1, le=1)] | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    conductor: RoutingHints | None = None


class CompleteRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """The native completion request (``POST /v1/complete``, ``POST /v1/route``)."""

    prompt: str | None = None
    messages: list[Message] | None = None
    task_type: Annotated[str, Meta(min_length=1, max_length=128)] = "chat"
    max_latency_ms: Positive | None = None
    min_quality: Probability | None = None
    max_cost_usd: NonNegative | None = None
    quality_target: Probability | None = None
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    strategy: str | None = None
    request_id: Annotated[str, Meta(max_length=128)] | None = None
    metadata: dict[str, Any] = {}
    params: GenerationParams | None = None


class FeedbackRequest(Struct, kw_only=True, forbid_unknown_fields=True):
    """A user rating on one named scale: ``stars`` (1-5), ``thumbs`` (true/false or
    "up"/"down") or ``score`` (0 to 1; 1 and 1.0 are the same). ``rating`` takes only
    true/false or "up"/"down"; a bare number there is refused as ambiguous.
    ``pending_ok``: keep it if the request is not stored yet (202)."""

    request_id: Annotated[str, Meta(min_length=1, max_length=128)]
    stars: float | None = None
    thumbs: bool | str | None = None
    score: float | None = None
    rating: bool | int | float | str | None = None
    rater: Annotated[str, Meta(max_length=128)] = ""
    pending_ok: bool = False


class FeedbackResponse(Struct, kw_only=True):
    request_id: str
    score: float
    effective_score: float | None
    status: Literal["applied", "pending"]


class PolicyUpdate(Struct, kw_only=True, forbid_unknown_fields=True):
    version: Annotated[str, Meta(min_length=1, max_length=64)] | None = None
    rollout_percent: Annotated[float, Meta(ge=0.0, le=100.0)] | None = None
    default_strategy: str | None = None
    freeze: bool | None = None
    exploration: dict[str, Annotated[float, Meta(ge=0.0, le=100.0)]] | None = None


class PolicyView(Struct, kw_only=True):
    version: str
    rollout_percent: float
    default_strategy: str
    freeze: bool
    exploration: dict[str, float]


class Trace(Struct, kw_only=True):
    """Why a request went where it went, and what it cost."""

    request_id: str
    strategy: str
    model: str
    mode: str
    routed_by: str
    explored: bool
    constraint_relaxed: bool
    propensity: float | None  # null when computed after the answer (the log has it)
    predicted_quality: float
    predicted_latency_ms: float
    predicted_cost_usd: float
    quality_target: float | None = None  # the task type's target, as the mix was solved for
    # What scale predicted_quality and quality_target are on: "calibrated" (judged
    # rewards read through the judge's error rates, measured on user labels) or
    # "as_scored" (the rewards as their sources gave them; no labels, or too few).
    quality_scale: str = "as_scored"
    set_aside: dict[str, str] = {}
    held_back: bool = False
    # A held-back cheap strategy run on this request off the path, judged and learned from
    # (its answer is not this one; it is logged as request ``<request_id>.probe``).
    probe: str | None = None
    cost_usd: float | None = None
    cost_estimated: bool = False
    latency_ms: float | None = None
    fallback_chain: list[str] = []
    escalated: bool = False
    sla_met: bool | None = None


class ResponseMessage(Struct, kw_only=True):
    role: str = "assistant"
    content: str = ""


class Choice(Struct, kw_only=True):
    index: int
    message: ResponseMessage
    finish_reason: str


class Usage(Struct, kw_only=True, omit_defaults=True):
    """OpenAI's usage; ``estimated`` (only when true) says Conductor counted the tokens
    itself (the upstream sent no usage, or the stream was cut), so the cost is estimated."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    estimated: bool = False


class ChatCompletion(Struct, kw_only=True):
    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    conductor: Trace


class CompleteResponse(Struct, kw_only=True):
    request_id: str
    text: str
    decision: Decision
    outcome: Outcome
    rewards: list[Reward]


class RequestView(Struct, kw_only=True):
    request_id: str
    decision: Decision | None
    outcome: Outcome | None
    rewards: list[Reward]
    prompt: str | None = None


class ModelCard(Struct, kw_only=True):
    id: str
    object: str = "model"
    created: int = 0
    owned_by: str = "conductor"
    description: str = ""


class ModelList(Struct, kw_only=True):
    object: str = "list"
    data: list[ModelCard] = []


def trace_of(decision: Decision, outcome: Outcome | None = None) -> Trace:
    t = Trace(
        request_id=decision.request_id, strategy=decision.strategy, model=decision.model,
        mode=decision.mode.value, routed_by=decision.routed_by, explored=decision.explored,
        constraint_relaxed=decision.constraint_relaxed, propensity=decision.propensity,
        predicted_quality=decision.predicted_quality,
        predicted_latency_ms=decision.predicted_latency_ms,
        predicted_cost_usd=decision.predicted_cost_usd, quality_target=decision.quality_target,
        set_aside=dict(decision.set_aside), held_back=decision.held_back,
        probe=decision.probe, quality_scale=decision.quality_scale)
    if outcome is not None:
        t.strategy = outcome.strategy
        t.model = outcome.model
        t.cost_usd = outcome.cost_usd
        t.cost_estimated = outcome.cost_estimated
        t.latency_ms = outcome.latency_ms
        t.fallback_chain = list(outcome.fallback_chain)
        t.escalated = outcome.escalated
        t.sla_met = outcome.sla_met
    return t


__all__ = ["ChatCompletion", "ChatCompletionRequest", "CompleteRequest", "CompleteResponse",
           "CompletionRequest", "FeedbackRequest", "FeedbackResponse", "ModelCard", "ModelList",
           "PolicyUpdate", "PolicyView", "RequestView", "RoutingHints", "Trace", "trace_of"]
