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


class RateLimitConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    requests_per_minute: Annotated[int, Meta(ge=1)] | None = None
    requests_per_hour: Annotated[int, Meta(ge=1)] | None = None
    max_cost_per_hour_usd: Annotated[float, Meta(ge=0.0)] | None = None


class Reservation(Struct, kw_only=True):
    client_id: str
    id: int
    amount_usd: float
    at: float


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
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = dict(limits)
        self.clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, _ClientWindows] = {}
        self._ids = itertools.count(1)
        self.refused = 0

    @classmethod
    def for_clients(cls, clients: Mapping[str, Any]) -> RateLimiter:
        """Limits for the configured clients (``ClientConfig``s by name)."""
        return cls({n: RateLimitConfig(requests_per_minute=c.requests_per_minute,
                                       requests_per_hour=c.requests_per_hour,
                                       max_cost_per_hour_usd=c.max_cost_per_hour_usd)
                    for n, c in clients.items()})

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
        with self._lock:
            w = self._clients.get(client_id)
            if w is None:
                return 0.0
            self._prune(w, self.clock())
            return w.spent

    def acquire(self, client_id: str, cost_upper_bound_usd: float = 0.0) -> Reservation:
        cfg = self.limits.get(client_id)
        now = self.clock()
        with self._lock:
            w = self._clients.setdefault(client_id, _ClientWindows())
            self._prune(w, now)
            if cfg is not None:
                if cfg.requests_per_minute is not None and len(w.minute) >= cfg.requests_per_minute:
                    self._refuse(f"{client_id}: requests_per_minute limit of "
                                 f"{cfg.requests_per_minute} reached", 60.0 - (now - w.minute[0]),
                                 "requests_per_minute")
                if cfg.requests_per_hour is not None and len(w.hour) >= cfg.requests_per_hour:
                    self._refuse(f"{client_id}: requests_per_hour limit of "
                                 f"{cfg.requests_per_hour} reached", 3600.0 - (now - w.hour[0]),
                                 "requests_per_hour")
                if cfg.max_cost_per_hour_usd is not None:
                    spent = w.spent
                    if spent + cost_upper_bound_usd > cfg.max_cost_per_hour_usd:
                        self._refuse(
                            f"{client_id}: max_cost_per_hour_usd budget of "
                            f"{cfg.max_cost_per_hour_usd:g} would be exceeded (spent "
                            f"{spent:.6f}, this request may cost up to "
                            f"{cost_upper_bound_usd:.6f})",
                            self._cost_wait(w, now, spent + cost_upper_bound_usd
                                            - cfg.max_cost_per_hour_usd),
                            "max_cost_per_hour_usd")
            w.minute.append(now)
            w.hour.append(now)
            rid = next(self._ids)
            entry = [now, cost_upper_bound_usd, float(rid)]
            w.spend.append(entry)
            w.by_id[rid] = entry
            w.spent += cost_upper_bound_usd
            return Reservation(client_id=client_id, id=rid, amount_usd=cost_upper_bound_usd,
                               at=now)

    def _cost_wait(self, w: _ClientWindows, now: float, excess: float) -> float:
        freed = 0.0
        for t, usd, _ in w.spend:  # already in time order
            freed += usd
            if freed >= excess:
                return max(0.0, 3600.0 - (now - t))
        return 3600.0

    def _refuse(self, message: str, retry_after_s: float, limit: str) -> None:
        self.refused += 1
        raise RateLimitedError(message, retry_after_s=max(0.0, retry_after_s), limit=limit)

    def extend(self, reservation: Reservation, more_usd: float, what: str = "") -> None:
        """Reserve ``more_usd`` on top of a reservation (a fallback about to run), against
        the cost budget only (it is the same request); raises RateLimitedError naming the
        budget when it does not fit."""
        cfg = self.limits.get(reservation.client_id)
        now = self.clock()
        with self._lock:
            w = self._clients.get(reservation.client_id)
            entry = w.by_id.get(reservation.id) if w is not None else None
            if w is None or entry is None:
                return
            self._prune(w, now)
            if cfg is not None and cfg.max_cost_per_hour_usd is not None and (
                    w.spent + more_usd > cfg.max_cost_per_hour_usd):
                self._refuse(
                    f"{reservation.client_id}: max_cost_per_hour_usd budget of "
                    f"{cfg.max_cost_per_hour_usd:g} would be exceeded by the fallback"
                    f"{' to ' + what if what else ''} (spent {w.spent:.6f}, it may cost up "
                    f"to {more_usd:.6f})",
                    self._cost_wait(w, now, w.spent + more_usd - cfg.max_cost_per_hour_usd),
                    "max_cost_per_hour_usd")
            entry[1] += more_usd
            w.spent += more_usd
            reservation.amount_usd += more_usd

    def reconcile(self, reservation: Reservation, actual_cost_usd: float) -> None:
        """Replace the reserved amount by what the request really cost."""
        with self._lock:
            w = self._clients.get(reservation.client_id)
            entry = w.by_id.get(reservation.id) if w is not None else None
            if w is not None and entry is not None:
                w.spent += actual_cost_usd - entry[1]
                entry[1] = actual_cost_usd
