"""Per-client limits: requests per minute and per hour, and USD spent per hour.

Windows slide (a log of timestamps, not fixed buckets), so there is no 2x burst at a
window's edge. Cost is reserved before a call at the request's upper bound and reconciled
with the actual cost afterwards; a request whose reservation would pass the hourly budget
is refused. One lock makes admission exact under concurrency.
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
from conductor.storage.base import LimitLedger, Refusal


class RateLimitConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    requests_per_minute: Annotated[int, Meta(ge=1)] | None = None
    requests_per_hour: Annotated[int, Meta(ge=1)] | None = None
    max_cost_per_hour_usd: Annotated[float, Meta(ge=0.0)] | None = None


class Reservation(Struct, kw_only=True):
    client_id: str
    id: int
    amount_usd: float
    at: float
    shared: bool = False  # counted in the store's ledger, not in this process


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
        # Reservations in time order: [time, usd, id]; by id for reconciliation.
        self.spend: deque[list[float]] = deque()
        self.by_id: dict[int, list[float]] = {}
        self.spent = 0.0


class RateLimiter:
    """Admission control per client. ``acquire`` raises RateLimitedError naming the limit
    (with the seconds to wait); ``reconcile`` replaces a reservation by the actual cost."""

    def __init__(self, limits: dict[str, RateLimitConfig], *,
                 clock: Callable[[], float] = time.monotonic,
                 ledger: LimitLedger | None = None) -> None:
        self.limits = dict(limits)
        self.clock = clock
        self.ledger = ledger  # shared by every process on the store, for limited clients
        self._lock = threading.Lock()
        self._clients: dict[str, _ClientWindows] = {}
        self._ids = itertools.count(1)
        self.refused = 0

    @classmethod
    def for_clients(cls, clients: Mapping[str, Any],
                    ledger: LimitLedger | None = None) -> RateLimiter:
        """Limits for the configured clients (``ClientConfig``s by name), counted in
        ``ledger`` when one is given (workers and replicas sharing a store)."""
        limits = {n: RateLimitConfig(requests_per_minute=c.requests_per_minute,
                                     requests_per_hour=c.requests_per_hour,
                                     max_cost_per_hour_usd=c.max_cost_per_hour_usd)
                  for n, c in clients.items()}
        limited = any(x is not None for cfg in limits.values() for x in (
            cfg.requests_per_minute, cfg.requests_per_hour, cfg.max_cost_per_hour_usd))
        return cls(limits, ledger=ledger if limited else None)

    def _prune(self, w: _ClientWindows, now: float) -> None:
        while w.minute and now - w.minute[0] >= 60.0:
            w.minute.popleft()
        while w.hour and now - w.hour[0] >= 3600.0:
            w.hour.popleft()
        while w.spend and now - w.spend[0][0] >= 3600.0:
            _, usd, rid = w.spend.popleft()
            w.spent -= usd
            del w.by_id[int(rid)]
        if not w.spend:
            w.spent = 0.0  # no drift from float additions once the window is empty

    def spent_last_hour(self, client_id: str) -> float:
        if self.ledger is not None and client_id in self.limits:
            return self.ledger.spent_last_hour(client_id)
        with self._lock:
            w = self._clients.get(client_id)
            if w is None:
                return 0.0
            self._prune(w, self.clock())
            return w.spent

    def acquire(self, client_id: str, cost_upper_bound_usd: float = 0.0) -> Reservation:
        cfg = self.limits.get(client_id)
        usd = cost_upper_bound_usd
        if cfg is not None and self.ledger is not None:
            got = self.ledger.admit(client_id, usd, per_minute=cfg.requests_per_minute,
                                    per_hour=cfg.requests_per_hour,
                                    max_usd=cfg.max_cost_per_hour_usd)
            if isinstance(got, Refusal):
                self._refuse(client_id, got, usd)
            assert isinstance(got, int)
            return Reservation(client_id=client_id, id=got, amount_usd=usd, at=self.clock(),
                               shared=True)
        now = self.clock()
        with self._lock:
            w = self._clients.setdefault(client_id, _ClientWindows())
            self._prune(w, now)
            if cfg is not None:
                if cfg.requests_per_minute is not None and len(w.minute) >= cfg.requests_per_minute:
                    self._refuse(client_id, Refusal("requests_per_minute", cfg.requests_per_minute,
                                                    60.0 - (now - w.minute[0])), usd)
                if cfg.requests_per_hour is not None and len(w.hour) >= cfg.requests_per_hour:
                    self._refuse(client_id, Refusal("requests_per_hour", cfg.requests_per_hour,
                                                    3600.0 - (now - w.hour[0])), usd)
                budget = cfg.max_cost_per_hour_usd
                if budget is not None and w.spent + usd > budget:
                    self._refuse(client_id, Refusal(
                        "max_cost_per_hour_usd", budget,
                        self._cost_wait(w, now, w.spent + usd - budget), w.spent), usd)
            w.minute.append(now)
            w.hour.append(now)
            rid = next(self._ids)
            entry = [now, usd, float(rid)]
            w.spend.append(entry)
            w.by_id[rid] = entry
            w.spent += usd
            return Reservation(client_id=client_id, id=rid, amount_usd=usd, at=now)

    def _cost_wait(self, w: _ClientWindows, now: float, excess: float) -> float:
        freed = 0.0
        for t, usd, _ in w.spend:  # already in time order
            freed += usd
            if freed >= excess:
                return max(0.0, 3600.0 - (now - t))
        return 3600.0

    def _refuse(self, client_id: str, refusal: Refusal, usd: float,
                fallback: str | None = None) -> None:
        self.refused += 1
        raise RateLimitedError(_refusal_message(client_id, refusal, usd, fallback),
                               retry_after_s=max(0.0, refusal.retry_after_s),
                               limit=refusal.limit)

    def extend(self, reservation: Reservation, more_usd: float, what: str = "") -> None:
        """Reserve ``more_usd`` on top of a reservation (a fallback about to run), against
        the cost budget only (it is the same request); raises RateLimitedError naming the
        budget when it does not fit."""
        cfg = self.limits.get(reservation.client_id)
        budget = cfg.max_cost_per_hour_usd if cfg is not None else None
        if reservation.shared and self.ledger is not None:
            refused = self.ledger.extend(reservation.id, reservation.client_id, more_usd,
                                         budget)
            if refused is not None:
                self._refuse(reservation.client_id, refused, more_usd, what)
            reservation.amount_usd += more_usd
            return
        now = self.clock()
        with self._lock:
            w = self._clients.get(reservation.client_id)
            entry = w.by_id.get(reservation.id) if w is not None else None
            if w is None or entry is None:
                return
            self._prune(w, now)
            if budget is not None and w.spent + more_usd > budget:
                self._refuse(reservation.client_id, Refusal(
                    "max_cost_per_hour_usd", budget,
                    self._cost_wait(w, now, w.spent + more_usd - budget), w.spent),
                    more_usd, what)
            entry[1] += more_usd
            w.spent += more_usd
            reservation.amount_usd += more_usd

    def reconcile(self, reservation: Reservation, actual_cost_usd: float) -> None:
        """Replace the reserved amount by what the request really cost."""
        if reservation.shared and self.ledger is not None:
            self.ledger.reconcile(reservation.id, actual_cost_usd)
            return
        with self._lock:
            w = self._clients.get(reservation.client_id)
            entry = w.by_id.get(reservation.id) if w is not None else None
            if w is not None and entry is not None:
                w.spent += actual_cost_usd - entry[1]
                entry[1] = actual_cost_usd
