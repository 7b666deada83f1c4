"""Per-client limits: requests per minute and per hour, and USD spent per hour.

Windows slide (a log of timestamps, not fixed buckets), so there is no 2x burst at a
window's edge. Cost is reserved before a call at the request's upper bound and reconciled
with the actual cost afterwards; a request whose reservation would pass the hourly budget
is refused. The counting is a ledger's: this process's windows under one lock, or the
store's table that every worker shares; either way admission is exact under concurrency.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from msgspec import Meta, Struct

from conductor.errors import RateLimitedError
from conductor.storage.base import LimitLedger, Refusal, seconds_until_freed


class RateLimitConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    requests_per_minute: Annotated[int, Meta(ge=1)] | None = None
    requests_per_hour: Annotated[int, Meta(ge=1)] | None = None
    max_cost_per_hour_usd: Annotated[float, Meta(ge=0.0)] | None = None


class Reservation(Struct, kw_only=True):
    client_id: str
    id: int | None  # in the ledger; None for a client without limits (not counted)
    amount_usd: float
    at: float


def _refusal_message(client_id: str, r: Refusal, usd: float, fallback: str | None) -> str:
    if r.limit != "max_cost_per_hour_usd":
        return f"{client_id}: {r.limit} limit of {int(r.bound)} reached"
    by = "" if fallback is None else " by the fallback" + (f" to {fallback}" if fallback else "")
    what = "this request" if fallback is None else "it"
    return (f"{client_id}: max_cost_per_hour_usd budget of {r.bound:g} would be exceeded{by}"
            f" (spent {r.spent:.6f}, {what} may cost up to {usd:.6f})")


class _ClientWindows:
    def __init__(self) -> None:
        self.minute: deque[float] = deque()
        self.hour: deque[float] = deque()
        self.spend: deque[list[float]] = deque()  # [time, usd, id], in time order
        self.spent = 0.0

    def prune(self, now: float, by_id: dict[int, tuple[_ClientWindows, list[float]]]) -> None:
        while self.minute and now - self.minute[0] >= 60.0:
            self.minute.popleft()
        while self.hour and now - self.hour[0] >= 3600.0:
            self.hour.popleft()
        while self.spend and now - self.spend[0][0] >= 3600.0:
            _, usd, rid = self.spend.popleft()
            self.spent -= usd
            del by_id[int(rid)]
        if not self.spend:
            self.spent = 0.0  # no drift from float additions once the window is empty


class WindowLedger:
    """The limit ledger of one process: sliding windows in memory, behind one lock (a
    ``LimitLedger``; the store's ledger is the one several processes share)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, _ClientWindows] = {}
        self._by_id: dict[int, tuple[_ClientWindows, list[float]]] = {}
        self._ids = itertools.count(1)

    def _windows(self, client_id: str, now: float) -> _ClientWindows:
        w = self._clients.setdefault(client_id, _ClientWindows())
        w.prune(now, self._by_id)
        return w

    def admit(self, client_id: str, usd: float, *, per_minute: int | None,
              per_hour: int | None, max_usd: float | None) -> int | Refusal:
        now = self.clock()
        with self._lock:
            w = self._windows(client_id, now)
            if per_minute is not None and len(w.minute) >= per_minute:
                return Refusal("requests_per_minute", per_minute, 60.0 - (now - w.minute[0]))
            if per_hour is not None and len(w.hour) >= per_hour:
                return Refusal("requests_per_hour", per_hour, 3600.0 - (now - w.hour[0]))
            if max_usd is not None and w.spent + usd > max_usd:
                return Refusal("max_cost_per_hour_usd", max_usd, seconds_until_freed(
                    ((t, u) for t, u, _ in w.spend), now, w.spent + usd - max_usd), w.spent)
            w.minute.append(now)
            w.hour.append(now)
            rid = next(self._ids)
            entry = [now, usd, float(rid)]
            w.spend.append(entry)
            self._by_id[rid] = (w, entry)
            w.spent += usd
            return rid

    def extend(self, reservation_id: int, client_id: str, more_usd: float,
               max_usd: float | None) -> Refusal | None:
        now = self.clock()
        with self._lock:
            w = self._windows(client_id, now)
            held = self._by_id.get(reservation_id)
            if held is None:  # left the hour already: nothing to add to
                return None
            if max_usd is not None and more_usd > 0 and w.spent + more_usd > max_usd:
                return Refusal("max_cost_per_hour_usd", max_usd, seconds_until_freed(
                    ((t, u) for t, u, _ in w.spend), now, w.spent + more_usd - max_usd),
                    w.spent)
            held[1][1] += more_usd
            w.spent += more_usd
            return None

    def reconcile(self, reservation_id: int, client_id: str, usd: float) -> None:
        with self._lock:
            held = self._by_id.get(reservation_id)
            if held is not None:
                w, entry = held
                w.spent += usd - entry[1]
                entry[1] = usd

    def spent_last_hour(self, client_id: str) -> float:
        with self._lock:
            return self._windows(client_id, self.clock()).spent


class RateLimiter:
    """Admission control per client, counted in a ``LimitLedger`` (this process's windows
    unless a shared one is given). ``acquire`` raises RateLimitedError naming the limit
    (with the seconds to wait); ``reconcile`` replaces a reservation by the actual cost.
    Clients without limits are not counted at all."""

    def __init__(self, limits: dict[str, RateLimitConfig], *,
                 clock: Callable[[], float] = time.monotonic,
                 ledger: LimitLedger | None = None) -> None:
        self.limits = {n: cfg for n, cfg in limits.items() if any(x is not None for x in (
            cfg.requests_per_minute, cfg.requests_per_hour, cfg.max_cost_per_hour_usd))}
        self.clock = clock
        self.ledger: LimitLedger = ledger if ledger is not None else WindowLedger(clock)
        self.refused = 0

    @classmethod
    def for_clients(cls, clients: Mapping[str, Any],
                    ledger: LimitLedger | None = None) -> RateLimiter:
        """Limits for the configured clients (``ClientConfig``s by name), counted in
        ``ledger`` when one is given (workers and replicas sharing a store)."""
        return cls({n: RateLimitConfig(requests_per_minute=c.requests_per_minute,
                                       requests_per_hour=c.requests_per_hour,
                                       max_cost_per_hour_usd=c.max_cost_per_hour_usd)
                    for n, c in clients.items()}, ledger=ledger)

    def limited(self, client_id: str) -> bool:
        """Whether admitting this client's requests consults the ledger."""
        return client_id in self.limits

    def spent_last_hour(self, client_id: str) -> float:
        return self.ledger.spent_last_hour(client_id) if self.limited(client_id) else 0.0

    def acquire(self, client_id: str, cost_upper_bound_usd: float = 0.0) -> Reservation:
        usd = cost_upper_bound_usd
        cfg = self.limits.get(client_id)
        if cfg is None:
            return Reservation(client_id=client_id, id=None, amount_usd=usd, at=self.clock())
        got = self.ledger.admit(client_id, usd, per_minute=cfg.requests_per_minute,
                                per_hour=cfg.requests_per_hour,
                                max_usd=cfg.max_cost_per_hour_usd)
        if isinstance(got, Refusal):
            self._refuse(client_id, got, usd)
        assert isinstance(got, int)
        return Reservation(client_id=client_id, id=got, amount_usd=usd, at=self.clock())

    def _refuse(self, client_id: str, refusal: Refusal, usd: float,
                fallback: str | None = None) -> None:
        self.refused += 1
        raise RateLimitedError(_refusal_message(client_id, refusal, usd, fallback),
                               retry_after_s=max(0.0, refusal.retry_after_s),
                               limit=refusal.limit)

    def rebase(self, reservation: Reservation, total_usd: float, what: str = "") -> None:
        """Before a fallback runs: the reservation becomes ``total_usd`` (what the failed
        candidates cost plus the fallback's upper bound), so the failed ones' unused bound
        is released and the fallback's must fit the cost budget (only the budget: it is
        the same request). Raises RateLimitedError naming the budget when it does not."""
        more = total_usd - reservation.amount_usd
        cfg = self.limits.get(reservation.client_id)
        if reservation.id is not None and cfg is not None:
            refused = self.ledger.extend(reservation.id, reservation.client_id, more,
                                         cfg.max_cost_per_hour_usd)
            if refused is not None:
                self._refuse(reservation.client_id, refused, more, what)
        reservation.amount_usd = total_usd

    def reconcile(self, reservation: Reservation, actual_cost_usd: float) -> None:
        """Replace the reserved amount by what the request really cost."""
        if reservation.id is not None:
            self.ledger.reconcile(reservation.id, reservation.client_id, actual_cost_usd)
