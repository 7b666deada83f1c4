"""Retries with backoff (tenacity) and a circuit breaker per (provider, model).

Retries: exponential backoff with full jitter on retryable errors (429, 5xx, timeouts, cut
streams), never shorter than the upstream's Retry-After, and never past the request's
deadline: a retry whose wait would overrun the remaining budget is not attempted.

The breaker is ours rather than a library's: the maintained Python breakers are
synchronous (pybreaker) or tied to one framework, and we need an injectable clock plus
a "failure rate over a window" rule; it is a few dozen lines.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception

from conductor.config import RetryConfig
from conductor.errors import ProviderError, ProviderRateLimitedError

T = TypeVar("T")


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


async def call_with_retries(fn: Callable[[], Awaitable[T]], cfg: RetryConfig, *,
                            deadline: float | None = None,
                            clock: Callable[[], float] = time.monotonic,
                            on_retry: Callable[[BaseException], None] | None = None,
                            rng: random.Random | None = None) -> T:
    """Call ``fn`` until it succeeds, a non-retryable error, ``cfg.max_attempts``, or the
    deadline (in ``clock`` seconds) would be overrun by the next wait.

    The first attempt runs outside tenacity (the common case pays nothing for retrying);
    after a retryable failure tenacity runs the rest, with full-jitter exponential
    backoff: wait ~ U(0, min(backoff_max, backoff_initial * 2**k)), never below the
    upstream's Retry-After.
    """
    try:
        return await fn()
    except BaseException as exc:
        if not _retryable(exc) or cfg.max_attempts <= 1:
            raise
        first = exc
    rand = rng or random.Random()

    def backoff(k: int, exc: BaseException | None) -> float:
        w = rand.uniform(0.0, min(cfg.backoff_max_s, cfg.backoff_initial_s * 2 ** k))
        if isinstance(exc, ProviderRateLimitedError) and exc.retry_after_s is not None:
            w = max(w, exc.retry_after_s)
        return w

    def too_late(wait: float) -> bool:
        return deadline is not None and clock() + wait >= deadline

    wait0 = backoff(0, first)
    if too_late(wait0):
        raise first
    if on_retry is not None:
        on_retry(first)
    await asyncio.sleep(wait0)

    def wait(state: RetryCallState) -> float:
        return backoff(state.attempt_number, state.outcome.exception() if state.outcome else None)

    def stop(state: RetryCallState) -> bool:
        # attempt_number counts tenacity's attempts; the first one happened above.
        return state.attempt_number + 1 >= cfg.max_attempts or too_late(state.upcoming_sleep)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(exc)

    retrying = AsyncRetrying(retry=retry_if_exception(_retryable), wait=wait, stop=stop,
                             reraise=True, before_sleep=before_sleep)
    return await retrying(fn)


class CircuitBreaker:
    """Closed -> open after ``consecutive_failures`` in a row, or a failure rate above
    ``failure_rate`` over the last ``window`` calls (once ``min_calls`` were seen);
    open -> half-open after ``cooldown_s``; half-open -> closed on a success, open again
    on a failure. While open, ``available()`` is false and the policy skips the strategy;
    half-open, ``try_call()`` lets one trial call through at a time."""

    def __init__(self, *, consecutive_failures: int = 3, failure_rate: float = 0.5,
                 window: int = 20, min_calls: int = 10, cooldown_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.consecutive_failures = consecutive_failures
        self.failure_rate = failure_rate
        self.min_calls = min_calls
        self.cooldown_s = cooldown_s
        self.clock = clock
        self._results: deque[bool] = deque(maxlen=window)
        self._streak = 0
        self._opened_at: float | None = None
        self._trial_at: float | None = None  # when the half-open trial in flight started
        self.times_opened = 0

    @property
    def state(self) -> str:
        if self._opened_at is None:  # most calls: no clock read
            return "closed"
        return "half_open" if self.clock() - self._opened_at >= self.cooldown_s else "open"

    def open_for_s(self) -> float:
        """How long the circuit has been open (0 when closed)."""
        return 0.0 if self._opened_at is None else self.clock() - self._opened_at

    def available(self) -> bool:
        return self.state != "open"

    def try_call(self) -> bool:
        """Whether a call may go to the upstream now: always when closed, never when open;
        half-open, exactly one trial at a time (a trial that never reports back frees its
        slot after another cooldown)."""
        state = self.state
        if state == "closed":
            return True
        if state == "open":
            return False
        now = self.clock()
        if self._trial_at is not None and now - self._trial_at < self.cooldown_s:
            return False
        self._trial_at = now
        return True

    def record_success(self) -> None:
        self._results.append(True)
        self._streak = 0
        self._opened_at = None
        self._trial_at = None

    def record_failure(self) -> None:
        self._trial_at = None
        self._results.append(False)
        self._streak += 1
        if self.state == "half_open":
            self._trip()
            return
        failures = self._results.count(False)
        if self._streak >= self.consecutive_failures or (
                len(self._results) >= self.min_calls
                and failures / len(self._results) > self.failure_rate):
            self._trip()

    def _trip(self) -> None:
        if self._opened_at is None or self.state == "half_open":
            self.times_opened += 1
        self._opened_at = self.clock()
        self._results.clear()
