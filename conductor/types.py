"""Wire and domain values. Every value that crosses a boundary is a msgspec Struct.

Constraints live in the types, so a bad value fails at decode time with a
message that names the field (``Expected `float` <= 1.0 - at `$.min_quality` ``).
"""

from __future__ import annotations

import enum
import math
from typing import Annotated, Any, Literal

from msgspec import Meta, Struct

Probability = Annotated[float, Meta(ge=0.0, le=1.0)]
NonNegative = Annotated[float, Meta(ge=0.0)]
Positive = Annotated[float, Meta(gt=0.0)]
Name = Annotated[str, Meta(min_length=1, max_length=128)]
# OpenAI's ranges for its sampling parameters (GenerationParams, the chat request).
Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
StopSequences = str | Annotated[list[str], Meta(max_length=4)]



PROBE_SUFFIX = ".probe"  # the log's request ids of probes; refused on a client's id


def probe_id(request_id: str) -> str:
    """The log's request id of the probe made on ``request_id``."""
    return f"{request_id}{PROBE_SUFFIX}"

class TaskType(enum.StrEnum):
    """The built-in task types. Operators may configure more; task types travel as strings."""

    CLASSIFY = "classify"
    SUMMARIZE = "summarize"
    CHAT = "chat"
    GENERATE_LONG = "generate_long"
    EXTRACT_JSON = "extract_json"


class Mode(enum.StrEnum):
    """How a strategy runs its model."""

    DIRECT = "direct"
    BATCH = "batch"
    VERIFIED = "verified"


# Built-in reward sources: "user", "simulated", "judge", "heuristic"; a custom evaluator's
# rewards carry its own source name (conductor.evaluators.fusion ranks them).
RewardSource = Name
RoutedBy = Literal["policy", "forced", "rollout_default", "shadow", "probe"]


class Constraints(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A request's limits; ``None`` means unconstrained.

    ``min_quality`` is a *floor*: this request's predicted quality. ``quality_target`` is a
    *target*: a mean over the task type's traffic; a request may carry a stricter one than
    its task type's (the stricter applies to its own decision)."""

    max_latency_ms: Positive | None = None
    min_quality: Probability | None = None
    max_cost_usd: NonNegative | None = None
    quality_target: Probability | None = None

    def merged_over(self, defaults: Constraints) -> Constraints:
        """These constraints, with unset fields taken from ``defaults``."""
        return Constraints(
            max_latency_ms=self.max_latency_ms if self.max_latency_ms is not None
            else defaults.max_latency_ms,
            min_quality=self.min_quality if self.min_quality is not None else defaults.min_quality,
            max_cost_usd=self.max_cost_usd if self.max_cost_usd is not None
            else defaults.max_cost_usd,
            quality_target=self.quality_target if self.quality_target is not None
            else defaults.quality_target,
        )


class Message(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str


class Sampling(Struct, kw_only=True, frozen=True):
    """OpenAI's sampling and output parameters (OpenAI's ranges): the fields that
    ``GenerationParams`` carries and the chat completions request takes as they are."""

    temperature: Temperature | None = None
    top_p: Probability | None = None
    stop: StopSequences | None = None
    seed: int | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    response_format: dict[str, Any] | None = None


class GenerationParams(Sampling, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    """The sampling and output parameters of one request, sent to whichever model answers
    as the client gave them. ``response_format`` and ``stop`` shape the answer itself, so
    a request with either is never micro-batched (a batch answers a JSON array of every
    item's answer)."""

    @classmethod
    def of(cls, given: Sampling) -> GenerationParams | None:
        """The parameters a request gave (None: it gave none)."""
        values = {f: getattr(given, f) for f in Sampling.__struct_fields__}
        return cls(**values) if any(v is not None for v in values.values()) else None

    def extra_body(self) -> dict[str, Any]:
        """The parameters given, but those a ProviderCall carries as fields of its own."""
        return {f: v for f in self.__struct_fields__
                if f not in ("temperature", "response_format")
                and (v := getattr(self, f)) is not None}

    @property
    def shapes_output(self) -> bool:
        """Whether the answer's form is the client's (a JSON schema, stop sequences)."""
        return self.response_format is not None or self.stop is not None


class CompletionRequest(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """One request to route. Give ``messages`` or ``prompt`` (a single user message).
    ``params``: sampling and output parameters for the model that answers."""

    messages: tuple[Message, ...] | None = None
    prompt: str | None = None
    task_type: Name = TaskType.CHAT.value
    constraints: Constraints = Constraints()
    client_id: Name = "default"
    request_id: str = ""
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    metadata: dict[str, Any] = {}
    params: GenerationParams | None = None

    def chat_messages(self) -> tuple[Message, ...]:
        if self.messages:
            return self.messages
        return (Message(role="user", content=self.prompt or ""),)

    def text(self) -> str:
        return "\n".join(m.content for m in self.chat_messages())


class StrategySample(Struct, kw_only=True, frozen=True, array_like=True):
    """What the policy drew for one strategy when deciding (kept for audit)."""

    strategy: str
    quality: float
    latency_p95_ms: float
    cost_usd: float
    feasible: bool
    prompt_quality: float | None = None  # predicted for this prompt, when decided per prompt


class Decision(Struct, kw_only=True, frozen=True):
    """The policy's choice for one request, with the probability it was made with."""

    request_id: str
    task_type: str
    strategy: str
    model: str
    mode: Mode
    predicted_quality: float
    predicted_latency_ms: float
    predicted_cost_usd: float
    propensity: float | None  # None until computed (after the answer; the log has it)
    explored: bool
    constraint_relaxed: bool
    policy_version: str
    routed_by: RoutedBy = "policy"
    policy_choice: str = ""
    constraints: Constraints = Constraints()
    client_id: str = "default"
    input_tokens: int = 0
    samples: tuple[StrategySample, ...] = ()
    created_at: float = 0.0
    quality_target: float | None = None  # the (effective) target the mix was solved for
    set_aside: dict[str, str] = {}  # strategies kept out of exploration, with why
    held_back: bool = False  # exploring was not affordable: the safe strategy served
    # The held-back strategy run on the same request off the path, judged and learned
    # from (its own log row: request id ``probe_id(request_id)``, routed_by "probe").
    probe: str | None = None
    per_prompt: bool = False  # decided on this prompt's predicted qualities
    features: tuple[float, ...] = ()  # the prompt's features (what per-prompt learning uses)
    # The scale of the predicted qualities and the target: "calibrated" (judged rewards
    # read through the judge's error rates, measured on user labels) or "as_scored".
    quality_scale: Literal["calibrated", "as_scored"] = "as_scored"


class CallRecord(Struct, kw_only=True, frozen=True):
    """One upstream call made while executing a strategy (a verified strategy makes several)."""

    strategy: str
    model: str
    role: Literal["answer", "draft", "judge", "escalation"] = "answer"
    latency_ms: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error: str | None = None


class Outcome(Struct, kw_only=True, frozen=True):
    """What happened when the chosen strategy ran."""

    request_id: str
    strategy: str
    model: str
    latency_ms: float
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    cost_estimated: bool = False
    error: str | None = None
    fallback_used: bool = False
    fallback_chain: tuple[str, ...] = ()
    sla_met: bool = True
    escalated: bool = False
    calls: tuple[CallRecord, ...] = ()
    text: str = ""
    finish_reason: str = "stop"
    created_at: float = 0.0


class Reward(Struct, kw_only=True, frozen=True):
    """A quality score in [0, 1] for one request, from one source."""

    request_id: str
    source: RewardSource
    score: Probability
    sampling_probability: Probability = 1.0
    rater: str = ""
    task_type: str = ""
    strategy: str = ""
    created_at: float = 0.0
    effective_score: float | None = None  # the request's fused reward after this one


class CompletionResult(Struct, kw_only=True, frozen=True):
    """What ``Conductor.complete`` returns: the answer and its decision trace."""

    request_id: str
    text: str
    decision: Decision
    outcome: Outcome
    rewards: tuple[Reward, ...] = ()


def estimate_tokens(text: str) -> int:
    """Approximate token count: 4 characters per token, OpenAI's rule of thumb for English.

    Used to predict cost before a call, and where an upstream does not report ``usage``
    (costs computed from it are marked estimated).
    """
    return max(1, math.ceil(len(text) / 4))


def estimate_prompt_tokens(messages: tuple[Message, ...]) -> int:
    """Approximate prompt tokens: the text plus 4 tokens of framing per message."""
    return sum(estimate_tokens(m.content) + 4 for m in messages)


# -- learning events ------------------------------------------------------------------------
#
# Everything the posterior learns from is one of these, applied in one place
# (``conductor.learning.Learner.apply``), live and when the log is replayed on restore.


class OutcomeEvent(Struct, kw_only=True, frozen=True, tag="outcome"):
    """A request was served (or failed): its latency, output tokens and escalation."""

    request_id: str
    task_type: str
    strategy: str
    latency_ms: float | None = None
    output_tokens: int | None = None
    escalated: bool | None = None
    error: str | None = None


class RewardEvent(Struct, kw_only=True, frozen=True, tag="reward"):
    """A request's fused reward changed from ``previous`` (None: it had none) to
    ``effective``; the posterior is corrected by the difference."""

    request_id: str
    task_type: str
    strategy: str
    effective: float
    previous: float | None = None
    features: tuple[float, ...] = ()  # the request's prompt features, when it has them
    pair: tuple[float, float] | None = None  # the (judge, user) calibration pair it completed
    applied: bool = True  # False: logged for its pair only (the posterior did not change)
    judged: bool = False  # ``effective`` is a judge's score (read through its error rates)
    previous_judged: bool = False  # ``previous`` was
    served: bool = True  # False: a probe's (learned as quality, not counted in the target)


class PolicyKnobs(Struct, kw_only=True, frozen=True):
    """The live policy settings an operator changes through ``PUT /v1/policy``."""

    version: str
    rollout_percent: float
    default_strategy: str
    freeze: bool
    exploration: dict[str, float]


class PolicyEvent(Struct, kw_only=True, frozen=True, tag="policy"):
    """An operator changed the policy. ``configured``: the config's own knobs when the
    change was made (a later edit of the config file outranks a stored change)."""

    knobs: PolicyKnobs
    actor: str = ""
    configured: PolicyKnobs | None = None


LearningEvent = OutcomeEvent | RewardEvent | PolicyEvent
