"""The log store protocol, the defaults a simple store inherits, and an in-memory store.

Every decision, outcome and reward goes to a log store. ``record_reward`` for user
feedback must be durable when it returns; decisions and outcomes may be buffered.
What only a database keeps (judge calls, policy history, snapshots and the event log,
feedback waiting for its request) has do-nothing defaults in ``BaseLogStore``, so the
router calls every store the same way.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import Future
from typing import Any, NamedTuple, Protocol, runtime_checkable

from msgspec import Struct

from conductor.types import (
    CompletionRequest,
    Decision,
    LearningEvent,
    Outcome,
    PolicyEvent,
    Reward,
)


class RequestRecord(Struct, kw_only=True):
    """Everything stored about one request, for audit and replay."""

    request_id: str
    decision: Decision | None = None
    outcome: Outcome | None = None
    rewards: list[Reward] = []
    prompt: str | None = None


class LogMark(Struct, kw_only=True, frozen=True):
    """Where a learned state stands in a log that several processes write: it has seen
    ``origin``'s events (one process's, numbered by ``seq`` in the order it applied them)
    through ``seq``, and every other process's through log position ``pos`` (positions
    number commits across processes). ``LogMark()`` has seen nothing; a snapshot from
    before positions existed is ``LogMark(seq=its seq)``."""

    origin: str = ""
    seq: int = 0
    pos: int = 0


class Refusal(NamedTuple):
    """A limit that refuses a request: its name, its bound, when to retry, and (for a
    budget) what was spent."""

    limit: str
    bound: float
    retry_after_s: float
    spent: float = 0.0


def seconds_until_freed(spend: Iterable[tuple[float, float]], now: float,
                        excess: float) -> float:
    """Seconds until enough of a client's spend, ``(time, usd)`` oldest first, leaves the
    hour to free ``excess`` USD (an hour if it never does)."""
    freed = 0.0
    for at, usd in spend:
        freed += usd
        if freed >= excess:
            return max(0.0, 3600.0 - (now - at))
    return 3600.0


class LimitLedger(Protocol):
    """Where rate limits and budgets are counted: ``admit`` returns a reservation id or
    the limit that refuses. ``rate_limiter.WindowLedger`` counts in one process;
    ``storage.limits.SQLiteLimits`` in the store, for every process sharing it."""

    def admit(self, client_id: str, usd: float, *, per_minute: int | None,
              per_hour: int | None, max_usd: float | None) -> int | Refusal: ...

    def extend(self, reservation_id: int, client_id: str, more_usd: float,
               max_usd: float | None) -> Refusal | None:
        """Add ``more_usd`` to a reservation (negative: release), refused past ``max_usd``."""
        ...

    def reconcile(self, reservation_id: int, client_id: str, usd: float) -> None: ...

    def spent_last_hour(self, client_id: str) -> float: ...


@runtime_checkable
class LogStore(Protocol):
    """Where the router writes. ``applied`` says whether the posterior learned from the
    row (false while the policy is frozen); ``previous_score`` marks a re-rating, and
    ``previous_source`` says which source the replaced value came from (the judge's
    scores are learned apart from the rest).
    ``origin`` names this process's events; ``shared``: other processes may write the
    same log (their events reach this one through ``events_after``)."""

    origin: str
    shared: bool

    def record_decision(self, decision: Decision, request: CompletionRequest) -> None: ...

    def record_outcome(self, outcome: Outcome, *, task_type: str = "",
                       applied: bool = True) -> None: ...

    def record_reward(self, reward: Reward, *, applied: bool = True,
                      previous_score: float | None = None, wait: bool | None = None,
                      pair: tuple[float, float] | None = None,
                      previous_source: str | None = None) -> Future[None] | None:
        """Queue a reward. User rewards are durable: with ``wait=False`` the caller gets a
        future to wait on (outside its own locks); otherwise this returns after commit."""
        ...

    def get_request(self, request_id: str) -> RequestRecord | None: ...

    def record_judge_call(self, row: dict[str, Any]) -> None: ...

    def record_policy_change(self, event: PolicyEvent) -> None:
        """Durable: returns after the change is committed."""
        ...

    def latest_policy(self) -> PolicyEvent | None: ...

    def record_pending_feedback(self, request_id: str, score: float, rater: str,
                                created_at: float) -> None: ...

    def clear_pending_feedback(self, request_id: str) -> None: ...

    def pending_feedback(self) -> list[tuple[str, float, str, float]]: ...

    def judge_user_pairs(self) -> list[tuple[str, str, float, float]]: ...

    def latest_snapshot(self) -> tuple[int, Any] | None: ...

    def log_position(self) -> int:
        """The position of the last committed event in the shared log (0: none, or a
        store that other processes cannot share)."""
        ...

    def events_after(self, mark: LogMark, upto: int | None = None) -> list[LearningEvent]:
        """Applied outcomes, rewards and policy changes a state at ``mark`` has not seen
        (through log position ``upto``), in log order."""
        ...

    def save_snapshot(self, seq: int, state: dict[str, Any], *, wait: bool = False) -> None: ...

    def last_seq(self) -> int: ...

    def flush(self) -> None: ...

    def limit_ledger(self) -> LimitLedger | None:
        """Where limits are counted when several processes share this store (None: each
        process counts its own)."""
        ...

    def write_health(self) -> dict[str, Any]:
        """How writing goes, for /readyz, /v1/stats and /metrics: ``writable`` and the
        failure counters of a store that can fail to write; empty for one that cannot."""
        ...

    def close(self) -> None: ...


class BaseLogStore:
    """Defaults for what a store need not keep: nothing is persisted beyond the records
    themselves, so there is no history to restore from."""

    origin = ""
    shared = False

    def record_judge_call(self, row: dict[str, Any]) -> None:
        return None

    def record_policy_change(self, event: PolicyEvent) -> None:
        return None

    def latest_policy(self) -> PolicyEvent | None:
        return None

    def record_pending_feedback(self, request_id: str, score: float, rater: str,
                                created_at: float) -> None:
        return None

    def clear_pending_feedback(self, request_id: str) -> None:
        return None

    def pending_feedback(self) -> list[tuple[str, float, str, float]]:
        return []

    def judge_user_pairs(self) -> list[tuple[str, str, float, float]]:
        return []

    def latest_snapshot(self) -> tuple[int, Any] | None:
        return None

    def log_position(self) -> int:
        return 0

    def events_after(self, mark: LogMark, upto: int | None = None) -> list[LearningEvent]:
        return []

    def save_snapshot(self, seq: int, state: dict[str, Any], *, wait: bool = False) -> None:
        return None

    def last_seq(self) -> int:
        return 0

    def flush(self) -> None:
        return None

    def write_health(self) -> dict[str, Any]:
        return {}

    def limit_ledger(self) -> LimitLedger | None:
        return None


class MemoryLogStore(BaseLogStore):
    """Keeps records in a dict: for tests, the demo and dry runs. Thread-safe."""

    def __init__(self) -> None:
        self._records: dict[str, RequestRecord] = {}
        self._lock = threading.Lock()

    def _rec(self, request_id: str) -> RequestRecord:
        rec = self._records.get(request_id)
        if rec is None:
            rec = self._records[request_id] = RequestRecord(request_id=request_id, rewards=[])
        return rec

    def record_decision(self, decision: Decision, request: CompletionRequest) -> None:
        with self._lock:
            self._rec(decision.request_id).decision = decision

    def record_outcome(self, outcome: Outcome, *, task_type: str = "",
                       applied: bool = True) -> None:
        with self._lock:
            self._rec(outcome.request_id).outcome = outcome

    def record_reward(self, reward: Reward, *, applied: bool = True,
                      previous_score: float | None = None, wait: bool | None = None,
                      pair: tuple[float, float] | None = None,
                      previous_source: str | None = None) -> Future[None] | None:
        with self._lock:
            self._rec(reward.request_id).rewards.append(reward)
        return None

    def get_request(self, request_id: str) -> RequestRecord | None:
        with self._lock:
            return self._records.get(request_id)

    def __len__(self) -> int:
        return len(self._records)

    def close(self) -> None:
        return None

