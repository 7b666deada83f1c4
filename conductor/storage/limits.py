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

_BUSY_FOR_S = 30.0

# Runs one statement (``?``/``:name`` parameters) in the open transaction; returns its rows.
Execute = Callable[[str, Sequence[Any] | dict[str, Any]], list[Any]]


class SQLLimits:
    """The limit ledger's logic on tables ``limit_reservations`` (one row per admitted
    request of the last hour) and ``limit_clients`` (each client's count and spend over
    those rows, kept in step, so an admission reads two numbers instead of summing an
    hour of rows). A client's rows older than an hour are deleted, and taken out of its
    totals, when it is next admitted. A backend provides ``_locked``: a transaction
    holding the client's lock (``client_id`` None: no lock, one statement)."""

    clock: Callable[[], float]

    def _locked(self, client_id: str | None, fn: Callable[[Execute], Any]) -> Any:
        raise NotImplementedError

    def _wait_for(self, ex: Execute, client_id: str, now: float, excess: float) -> float:
        return seconds_until_freed(ex(
            "SELECT at, usd FROM limit_reservations WHERE client_id = ? AND at > ?"
            " ORDER BY at", (client_id, now - 3600.0)), now, excess)

    def _totals(self, ex: Execute, client_id: str, now: float) -> tuple[int, float]:
        """The client's requests and spend in the last hour, after expiring older rows."""
        old = {"c": client_id, "h": now - 3600.0}
        (n, usd), = ex("SELECT count(*), coalesce(sum(usd), 0.0) FROM limit_reservations"
                       " WHERE client_id = :c AND at <= :h", old)
        if n:
            ex("DELETE FROM limit_reservations WHERE client_id = :c AND at <= :h", old)
            ex("UPDATE limit_clients SET hour_count = hour_count - :n,"
               " hour_usd = hour_usd - :usd WHERE client_id = :c",
               {"c": client_id, "n": n, "usd": usd})
        rows = ex("SELECT hour_count, hour_usd FROM limit_clients WHERE client_id = ?",
                  (client_id,))
        return (int(rows[0][0]), float(rows[0][1])) if rows else (0, 0.0)

    def _nth_newest(self, ex: Execute, client_id: str, since: float, n: int) -> float | None:
        """The time of the client's ``n``-th newest admission after ``since`` (None:
        fewer than ``n``). Reads at most ``n`` index entries."""
        rows = ex("SELECT at FROM limit_reservations WHERE client_id = ? AND at > ?"
                  " ORDER BY at DESC LIMIT 1 OFFSET ?", (client_id, since, n - 1))
        return float(rows[0][0]) if rows else None

    def admit(self, client_id: str, usd: float, *, per_minute: int | None,
              per_hour: int | None, max_usd: float | None) -> int | Refusal:
        """A reservation id, or the limit that refuses it."""
        def run(ex: Execute) -> int | Refusal:
            now = self.clock()  # once the lock is ours: times follow commit order
            hour, spent = self._totals(ex, client_id, now)
            if per_minute is not None:
                at = self._nth_newest(ex, client_id, now - 60.0, per_minute)
                if at is not None:  # when it leaves the minute, one more fits
                    return Refusal("requests_per_minute", per_minute, 60.0 - (now - at))
            if per_hour is not None and hour >= per_hour:
                at = self._nth_newest(ex, client_id, now - 3600.0, per_hour)
                return Refusal("requests_per_hour", per_hour,
                               3600.0 - (now - at) if at is not None else 0.0)
            if max_usd is not None and spent + usd > max_usd:
                return Refusal("max_cost_per_hour_usd", max_usd,
                               self._wait_for(ex, client_id, now, spent + usd - max_usd),
                               spent)
            (rid,), = ex("INSERT INTO limit_reservations (client_id, at, usd)"
                         " VALUES (?, ?, ?) RETURNING id", (client_id, now, usd))
            ex("INSERT INTO limit_clients (client_id, hour_count, hour_usd)"
               " VALUES (:c, 1, :usd) ON CONFLICT (client_id) DO UPDATE SET"
               " hour_count = limit_clients.hour_count + 1,"
               " hour_usd = limit_clients.hour_usd + :usd", {"c": client_id, "usd": usd})
            return int(rid)

        out: int | Refusal = self._locked(client_id, run)
        return out

    def _add(self, ex: Execute, reservation_id: int, client_id: str, more_usd: float) -> None:
        """Add to a reservation and to its client's spend (nothing if it expired)."""
        if ex("UPDATE limit_reservations SET usd = usd + ? WHERE id = ? RETURNING id",
              (more_usd, reservation_id)):
            ex("UPDATE limit_clients SET hour_usd = hour_usd + ? WHERE client_id = ?",
               (more_usd, client_id))

    def extend(self, reservation_id: int, client_id: str, more_usd: float,
               max_usd: float | None) -> Refusal | None:
        """Add ``more_usd`` to a reservation unless it takes the client past ``max_usd``
        (a negative amount releases, always)."""
        def run(ex: Execute) -> Refusal | None:
            now = self.clock()
            if max_usd is not None and more_usd > 0:
                _, spent = self._totals(ex, client_id, now)
                if spent + more_usd > max_usd:
                    return Refusal("max_cost_per_hour_usd", max_usd, self._wait_for(
                        ex, client_id, now, spent + more_usd - max_usd), spent)
            self._add(ex, reservation_id, client_id, more_usd)
            return None

        out: Refusal | None = self._locked(client_id, run)
        return out

    def reconcile(self, reservation_id: int, client_id: str, usd: float) -> None:
        """The reservation becomes what the request really cost."""
        def run(ex: Execute) -> None:
            held = ex("SELECT usd FROM limit_reservations WHERE id = ?", (reservation_id,))
            if held:
                self._add(ex, reservation_id, client_id, usd - float(held[0][0]))

        self._locked(client_id, run)

    def spent_last_hour(self, client_id: str) -> float:
        (spent,), = self._locked(None, lambda ex: ex(
            "SELECT coalesce(sum(usd), 0.0) FROM limit_reservations WHERE client_id = ?"
            " AND at > ?", (client_id, self.clock() - 3600.0)))
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
