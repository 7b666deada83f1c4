"""The one path to a model: its provider, retries within the deadline, its circuit breaker."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping

from conductor.config import Settings
from conductor.errors import CircuitOpenError, ConfigError, ProviderError
from conductor.execution.health import Health
from conductor.providers.base import Provider, ProviderCall, ProviderResponse, StreamChunk
from conductor.providers.reliability import call_with_retries
from conductor.types import CompletionRequest


class Upstream:
    """Builds the provider call for a strategy and sends it. Every attempt (retries
    included, streams too) feeds the model's circuit breaker through ``Health``."""

    def __init__(self, settings: Settings, providers: Mapping[str, Provider],
                 health: Health) -> None:
        self.settings = settings
        self.providers = dict(providers)
        self.health = health
        for name, m in settings.models.items():
            if m.provider not in self.providers:
                raise ConfigError(f"models.{name}.provider: no provider {m.provider!r} opened")

    def provider_of(self, model: str) -> Provider:
        return self.providers[self.settings.models[model].provider]

    def call_for(self, strategy: str, request: CompletionRequest,
                 deadline: float | None = None) -> ProviderCall:
        """The chat completion a strategy sends for a request: the strategy's model and
        max_tokens cap, the task type's labels, the time left before the deadline, and the
        client's sampling and output parameters."""
        st = self.settings.strategies[strategy]
        model = self.settings.models[st.model]
        max_tokens = request.max_tokens
        if st.max_tokens is not None:
            max_tokens = min(max_tokens or st.max_tokens, st.max_tokens)
        meta = dict(request.metadata)
        labels = self.settings.task_types[request.task_type].labels
        if labels and "labels" not in meta:
            meta["labels"] = list(labels)
        timeout = None if deadline is None else max(0.001, deadline - time.monotonic())
        p = request.params
        return ProviderCall(model=model.upstream_name or st.model,
                            messages=request.chat_messages(), max_tokens=max_tokens,
                            task_type=request.task_type, metadata=meta, timeout_s=timeout,
                            temperature=p.temperature if p else None,
                            response_format=p.response_format if p else None,
                            extra_body=p.extra_body() if p else {})

    def cost(self, strategy: str, resp: ProviderResponse) -> float:
        """What an answer of a strategy cost at its model's prices (batch discount too)."""
        return (self.settings.model_of(strategy).cost_usd(resp.input_tokens, resp.output_tokens)
                * self.settings.strategies[strategy].batch_discount)

    async def complete(self, model: str, call: ProviderCall,
                       deadline: float | None) -> ProviderResponse:
        """One call with retries (never past ``deadline``, monotonic seconds)."""
        provider = self.provider_of(model)
        pc = self.settings.providers[self.settings.models[model].provider]

        failed: list[ProviderError] = []

        async def attempt() -> ProviderResponse:
            self.health.admit(model)
            try:
                resp = await provider.complete(call)
            except ProviderError as exc:
                self.health.record(model, exc)
                failed.append(exc)
                raise
            self.health.record(model, None)
            return resp

        def on_retry(exc: BaseException) -> None:
            self.health.retries[model] += 1

        try:
            return await call_with_retries(attempt, pc.retry, deadline=deadline,
                                           on_retry=on_retry)
        except CircuitOpenError:
            # Our own retries opened the circuit: the caller learns what the upstream
            # said, not that we stopped asking.
            if failed:
                raise failed[-1] from None
            raise

    async def stream(self, model: str, call: ProviderCall) -> AsyncIterator[StreamChunk]:
        """The provider's stream; its end (or failure) feeds the breaker."""
        self.health.admit(model)
        try:
            async for chunk in self.provider_of(model).stream(call):
                if chunk.final is not None:
                    self.health.record(model, None)
                yield chunk
        except ProviderError as exc:
            self.health.record(model, exc)
            raise
