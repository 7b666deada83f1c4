"""Circuit breakers per (provider, upstream model), and what execution counts."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable

from conductor.config import Settings, VerifiedStrategy
from conductor.errors import CircuitOpenError, ProviderBadRequestError, ProviderError
from conductor.providers.reliability import CircuitBreaker

log = logging.getLogger("conductor.execution")


class Health:
    """One breaker per (provider, upstream model): configured models naming the same
    upstream model share it. Feeds strategy eligibility (an open circuit takes the
    strategies using that model out of the policy's choice)."""

    def __init__(self, settings: Settings, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        # Since start: fallbacks to another strategy, failed upstream attempts by (model,
        # error class), retries by model.
        self.fallbacks = 0
        self.failures: Counter[tuple[str, str]] = Counter()
        self.retries: Counter[str] = Counter()
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._breaker_of: dict[str, CircuitBreaker] = {}
        for name, m in settings.models.items():
            cc = settings.providers[m.provider].circuit
            self._breaker_of[name] = self._breakers.setdefault(
                (m.provider, m.upstream_name or name), CircuitBreaker(
                    consecutive_failures=cc.consecutive_failures, failure_rate=cc.failure_rate,
                    window=cc.window, min_calls=cc.min_calls, cooldown_s=cc.cooldown_s,
                    clock=clock))
        # The models whose circuits gate each strategy (a verified one: its draft's model).
        self._models_of: dict[str, tuple[str, ...]] = {}
        for s, st in settings.strategies.items():
            first = settings.strategies[st.verified.draft] if isinstance(
                st, VerifiedStrategy) else st
            self._models_of[s] = (first.model,)

    def breaker(self, model: str) -> CircuitBreaker:
        """The circuit breaker of a configured model's (provider, upstream model)."""
        return self._breaker_of[model]

    def admit(self, model: str) -> None:
        """Before an upstream call: raises CircuitOpenError unless the breaker lets it
        through (half-open: only the one trial)."""
        breaker = self._breaker_of[model]
        if not breaker.try_call():
            why = ("cooling down after failures" if breaker.state == "open"
                   else "its one trial call is in flight")
            raise CircuitOpenError(f"{model}: circuit {breaker.state}, {why}", provider=model)

    def record(self, model: str, exc: ProviderError | None) -> None:
        """Feed an upstream attempt's result to the model's breaker. A rejected request
        (4xx, e.g. too long for the context) is the request's fault, not the model's."""
        breaker = self._breaker_of[model]
        if exc is None:
            breaker.record_success()
            return
        self.failures[model, type(exc).__name__] += 1
        if isinstance(exc, ProviderBadRequestError | CircuitOpenError):
            return
        was_open = breaker.state == "open"
        breaker.record_failure()
        if not was_open and breaker.state == "open":
            log.warning("circuit opened for model %s (%s)", model, exc)

    @property
    def circuits_opened(self) -> int:
        """Times a circuit opened since start (each breaker counts its own)."""
        return sum(b.times_opened for b in self._breakers.values())

    def unavailable(self) -> set[str]:
        """Strategies whose model's circuit is open."""
        if all(b.state == "closed" for b in self._breakers.values()):
            return set()  # the common case, without walking the strategies
        return {s for s, models in self._models_of.items()
                if any(not self._breaker_of[m].available() for m in models)}

    def circuit_states(self) -> dict[str, str]:
        """Each configured model's circuit state: closed, half_open or open."""
        return {m: b.state for m, b in self._breaker_of.items()}

    def circuits_open(self) -> dict[str, float]:
        """Seconds each open circuit has been open, by "provider/model"."""
        return {f"{p}/{m}": b.open_for_s() for (p, m), b in self._breakers.items()
                if b.state != "closed"}
