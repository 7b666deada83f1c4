"""A request between its decision and its learning: admission against the client's limits,
and the record of requests answered but not yet logged (what a racing rating waits on)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, TypeVar

from conductor.config import Settings
from conductor.deciding import Pending
from conductor.errors import ConflictError, InvalidRequestError, RateLimitedError
from conductor.execution.costs import cost_upper_bound
from conductor.metrics import RouterListener
from conductor.rate_limiter import RateLimiter, Reservation
from conductor.types import PROBE_SUFFIX, CompletionRequest

T = TypeVar("T")


class Admission:
    """Reserves a strategy's upper-bound cost against the client's limits before it runs,
    rebases the reservation before a fallback, and settles it to the actual cost."""

    def __init__(self, settings: Settings, limiter: RateLimiter,
                 listeners: Sequence[RouterListener]) -> None:
        self.settings = settings
        self.limiter = limiter
        self._listeners = listeners  # the router's list: listeners added later count

    def cost_upper_bound(self, strategy: str, request: CompletionRequest) -> float:
        """The most ``strategy`` can cost for ``request`` (what admission reserves)."""
        return cost_upper_bound(self.settings, strategy, request)

    async def _limits(self, client_id: str, call: Callable[..., T], *args: Any) -> T:
        """A limiter call. A limited client's runs off the event loop: its ledger may wait
        on a lock, or on the store other workers share."""
        if self.limiter.limited(client_id):
            return await asyncio.to_thread(call, *args)
        return call(*args)

    async def admit(self, request: CompletionRequest, strategy: str) -> Reservation:
        """Reserve the strategy's upper-bound cost; RateLimitedError if it does not fit."""
        try:
            return await self._limits(request.client_id, self.limiter.acquire,
                                      request.client_id, self.cost_upper_bound(strategy, request))
        except RateLimitedError as exc:
            for listener in self._listeners:
                listener.on_rate_limited(request.client_id, exc.limit)
            raise

    async def rebase(self, request: CompletionRequest, reservation: Reservation,
                     strategy: str, spent: float) -> None:
        """Before a fallback to ``strategy`` runs: reserve what was spent plus its bound."""
        await self._limits(request.client_id, self.limiter.rebase, reservation,
                           spent + self.cost_upper_bound(strategy, request), strategy)

    async def settle(self, reservation: Reservation, cost_usd: float) -> None:
        """The reservation becomes the actual cost, off the event loop for a limited
        client (its ledger may be a database). Until then it holds the upper bound."""
        await self._limits(reservation.client_id, self.limiter.reconcile, reservation,
                           cost_usd)

    def settle_here(self, reservation: Reservation, cost_usd: float) -> None:
        """``settle`` on this thread (off the event loop already: the bookkeeping one)."""
        self.limiter.reconcile(reservation, cost_usd)


class InFlight:
    """Requests being served: what computes each one's propensity, and whether it has
    landed in the log (a rating that races its request waits for that). A rating that
    waits gets an event of its own; the rest of the requests create none."""

    def __init__(self) -> None:
        self._pending: dict[str, Pending | None] = {}
        self._waiters: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    @contextlib.asynccontextmanager
    async def held(self, request_id: str,
                   lookup: Callable[[str], object | None]) -> AsyncIterator[None]:
        """Hold a client's own request id (none: nothing to hold) while the request is
        decided and admitted; released if that fails, kept in flight otherwise. The log
        keeps one request per id, so an id in flight or in the log (``lookup``, off the
        event loop) is refused (ConflictError): a second request would replace the
        first's rows after both had been learned from. So is one in the probes' form
        (``probe_id``), which a probe would overwrite."""
        if not request_id:
            yield
            return
        if request_id.endswith(PROBE_SUFFIX):
            raise InvalidRequestError(
                f"request_id {request_id!r} ends in {PROBE_SUFFIX!r}, which Conductor keeps "
                "for the probes it logs; choose another id", field="request_id")
        with self._lock:
            taken = request_id in self._pending
            if not taken:
                self._pending[request_id] = None
        if taken:
            raise ConflictError(f"request_id {request_id!r} is in use by a request in "
                                "flight; give each request an id of its own")
        try:
            if await asyncio.to_thread(lookup, request_id) is not None:
                raise ConflictError(f"request_id {request_id!r} is already in the log; "
                                    "give each request an id of its own")
            yield
        except BaseException:
            self.landed(request_id)
            raise

    def begin(self, request_id: str, pending: Pending | None) -> None:
        with self._lock:
            self._pending[request_id] = pending

    def pending(self, request_id: str) -> Pending | None:
        with self._lock:
            return self._pending.get(request_id)

    def landed(self, request_id: str) -> None:
        """Logged (or abandoned): a rating waiting for it goes on."""
        with self._lock:
            self._pending.pop(request_id, None)
            waiter = self._waiters.pop(request_id, None)
        if waiter is not None:
            waiter.set()

    def wait(self, request_id: str, timeout: float) -> bool:
        """Wait up to ``timeout`` for a request in flight to land; True if it is still in
        flight afterwards (False at once for one not in flight)."""
        with self._lock:
            if request_id not in self._pending:
                return False
            waiter = self._waiters.setdefault(request_id, threading.Event())
        waiter.wait(timeout)
        with self._lock:
            return request_id in self._pending
