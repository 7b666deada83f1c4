"""The provider protocol: what the router needs from an upstream model API."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from msgspec import Struct

from conductor.types import Message, estimate_prompt_tokens, estimate_tokens


class ProviderCall(Struct, kw_only=True, frozen=True):
    """One chat completion to send upstream."""

    model: str  # the model's upstream name
    messages: tuple[Message, ...]
    max_tokens: int | None = None
    task_type: str = "chat"
    temperature: float | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, Any] = {}
    timeout_s: float | None = None  # the request's remaining budget, when it has one
    batched: bool = False  # part of a micro-batch (the demo world simulates its effect)
    batch_items: int = 0  # > 0: the messages hold this many numbered items (a micro-batch)
    extra_body: dict[str, Any] = {}  # provider-specific fields (e.g. a grammar)


class ProviderResponse(Struct, kw_only=True, frozen=True):
    """An upstream's answer. ``usage_estimated`` is set when tokens were counted by us."""

    text: str
    input_tokens: int
    output_tokens: int
    latency_ms: float
    finish_reason: str = "stop"
    usage_estimated: bool = False
    extra: dict[str, Any] = {}


class StreamChunk(Struct, kw_only=True, frozen=True):
    """A streamed text delta; the last chunk carries ``final`` (usage, finish reason)."""

    delta: str
    final: ProviderResponse | None = None


@runtime_checkable
class Provider(Protocol):
    """An upstream model API. Implementations translate their errors into ProviderError.

    ``complete`` answers whole; ``stream`` yields text deltas and ends with one chunk
    carrying ``final`` (usage, finish reason). A stream that ends early raises
    ProviderStreamError, never ends quietly."""

    name: str
    virtual_time: bool  # latencies are simulated, not waited for (the demo world)

    async def complete(self, call: ProviderCall) -> ProviderResponse: ...

    def stream(self, call: ProviderCall) -> AsyncIterator[StreamChunk]: ...

    async def aclose(self) -> None: ...


__all__ = ["Provider", "ProviderCall", "ProviderResponse", "StreamChunk",
           "estimate_prompt_tokens", "estimate_tokens"]
