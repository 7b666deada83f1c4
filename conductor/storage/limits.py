"""Rate limits and cost budgets shared by every process on one database.

Each admission is one transaction that holds the client's lock: count the client's
reservations in the last minute and hour, sum their cost, refuse or insert. The check and
the insert are atomic across workers and replicas; the windows slide (rows carry a
wall-clock time, as processes share no monotonic clock: keep replicas' clocks in sync).
Only clients with limits come here; the rest never touch the database.

``SQLLimits`` holds the logic; a backend gives it a transaction that holds the lock:
SQLite's ``BEGIN IMMEDIATE`` (one writer for the whole file), PostgreSQL's advisory lock
on the client (clients do not wait for one another).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from conductor.errors import StorageError
from conductor.storage.base import Refusal, seconds_until_freed

_PRUNE_EVERY_S = 60.0
_BUSY_FOR_S = 30.0

# Runs one statement (``?``/``:name`` parameters) in the open transaction; returns its rows.
Execute = Callable[[str, Sequence[Any] | dict[str, Any]], list[Any]]


class SQLLimits:
    """The limit ledger's logic on table ``limit_reservations``; a backend provides
    ``_locked`` (a transaction holding the client's lock; ``client_id`` None: no lock
    needed, one row changes)."""

    clock: Callable[[], float]
    _pruned = 0.0

    def _locked(self, client_id: str | None, fn: Callable[[Execute], Any]) -> Any:
        raise NotImplementedError

    def _wait_for(self, ex: Execute, client_id: str, now: float, excess: float) -> float:
        return seconds_until_freed(ex(
            "SELECT at, usd FROM limit_reservations WHERE client_id = ? AND at > ?"
            " ORDER BY at", (client_id, now - 3600.0)), now, excess)

    def admit(self, client_id: str, usd: float, *, per_minute: int | None,
              per_hour: int | None, max_usd: float | None) -> int | Refusal:
        """A reservation id, or the limit that refuses it."""
        def run(ex: Execute) -> int | Refusal:
            now = self.clock()  # once the lock is ours: times follow commit order
            if now - self._pruned >= _PRUNE_EVERY_S:
                ex("DELETE FROM limit_reservations WHERE at <= ?", (now - 3600.0,))
                self._pruned = now
            minute, first_minute, hour, first_hour, spent = ex(
                "SELECT count(*) FILTER (WHERE at > :m), min(at) FILTER (WHERE at > :m),"
                " count(*), min(at), coalesce(sum(usd), 0.0) FROM limit_reservations"
                " WHERE client_id = :c AND at > :h",
                {"m": now - 60.0, "h": now - 3600.0, "c": client_id})[0]
            if per_minute is not None and minute >= per_minute:
                return Refusal("requests_per_minute", per_minute, 60.0 - (now - first_minute))
            if per_hour is not None and hour >= per_hour:
                return Refusal("requests_per_hour", per_hour, 3600.0 - (now - first_hour))
            if max_usd is not None and spent + usd > max_usd:
                return Refusal("max_cost_per_hour_usd", max_usd,
                               self._wait_for(ex, client_id, now, spent + usd - max_usd),
                               spent)
            (rid,) = ex("INSERT INTO limit_reservations (client_id, at, usd)"
                        " VALUES (?, ?, ?) RETURNING id", (client_id, now, usd))[0]
            return int(rid)

        out: int | Refusal = self._locked(client_id, run)
        return out

    def extend(self, reservation_id: int, client_id: str, more_usd: float,
               max_usd: float | None) -> Refusal | None:
        """Add ``more_usd`` to a reservation unless it takes the client past ``max_usd``
        (a negative amount releases, always)."""
        def run(ex: Execute) -> Refusal | None:
            now = self.clock()
            if max_usd is not None and more_usd > 0:
                (spent,) = ex(
                    "SELECT coalesce(sum(usd), 0.0) FROM limit_reservations"
                    " WHERE client_id = ? AND at > ?", (client_id, now - 3600.0))[0]
                if spent + more_usd > max_usd:
                    return Refusal("max_cost_per_hour_usd", max_usd, self._wait_for(
                        ex, client_id, now, spent + more_usd - max_usd), spent)
            ex("UPDATE limit_reservations SET usd = usd + ? WHERE id = ?",
               (more_usd, reservation_id))
            return None

        out: Refusal | None = self._locked(client_id, run)
        return out

    def reconcile(self, reservation_id: int, usd: float) -> None:
        """The reservation becomes what the request really cost."""
        self._locked(None, lambda ex: ex(
            "UPDATE limit_reservations SET usd = ? WHERE id = ?", (usd, reservation_id)))

    def spent_last_hour(self, client_id: str) -> float:
        (spent,) = self._locked(None, lambda ex: ex(
            "SELECT coalesce(sum(usd), 0.0) FROM limit_reservations WHERE client_id = ?"
            " AND at > ?", (client_id, self.clock() - 3600.0))[0])
        return float(spent)


class SQLiteLimits(SQLLimits):
    """The limit ledger of a SQLite store: ``BEGIN IMMEDIATE`` locks the file."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._open: sqlite3.Connection | None = None  # on first use: most clients have no limits
        self._lock = threading.Lock()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._open is None:
            self._open = sqlite3.connect(str(self.path), check_same_thread=False,
                                         isolation_level=None)
            self._open.execute("PRAGMA busy_timeout=5000")
            self._open.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync per admission
        return self._open

    def _locked(self, client_id: str | None, fn: Callable[[Execute], Any]) -> Any:
        def ex(sql: str, params: Sequence[Any] | dict[str, Any]) -> list[Any]:
            return self._conn.execute(sql, params).fetchall()

        with self._lock:
            try:
                self._begin()
                try:
                    out = fn(ex)
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise
                self._conn.execute("COMMIT")
                return out
            except sqlite3.Error as exc:
                raise StorageError(f"{self.path}: limit ledger: {exc}") from exc

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, trying again while other processes hold the write lock past
        the busy timeout (SQLite's busy handler can starve one waiter under contention)."""
        deadline = time.monotonic() + _BUSY_FOR_S
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise

    def close(self) -> None:
        with self._lock:
            if self._open is not None:
                self._open.close()
                self._open = None
