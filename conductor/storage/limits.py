"""Rate limits and cost budgets shared by every process on one SQLite file.

Each admission is one ``BEGIN IMMEDIATE`` transaction: count the client's reservations in
the last minute and hour, sum their cost, refuse or insert. SQLite lets one writer in at
a time, so the check and the insert are atomic across workers; the windows slide (rows
carry a wall-clock time, as processes share no monotonic clock). Only clients with limits
come here; the rest never touch the database.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conductor.errors import StorageError
from conductor.storage.base import Refusal, seconds_until_freed

_PRUNE_EVERY_S = 60.0
_BUSY_FOR_S = 30.0


class SQLiteLimits:
    """The limit ledger of a SQLite store (its table ``limit_reservations``)."""

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.clock = clock
        self._open: sqlite3.Connection | None = None  # on first use: most clients have no limits
        self._lock = threading.Lock()
        self._pruned = 0.0

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._open is None:
            self._open = sqlite3.connect(str(self.path), check_same_thread=False,
                                         isolation_level=None)
            self._open.execute("PRAGMA busy_timeout=5000")
            self._open.execute("PRAGMA synchronous=NORMAL")  # WAL: no fsync per admission
        return self._open

    def _immediate(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        with self._lock:
            try:
                self._begin()
                try:
                    out = fn(self._conn)
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

    def _wait_for(self, conn: sqlite3.Connection, client_id: str, now: float,
                  excess: float) -> float:
        return seconds_until_freed(conn.execute(
            "SELECT at, usd FROM limit_reservations WHERE client_id = ? AND at > ?"
            " ORDER BY at", (client_id, now - 3600.0)), now, excess)

    def admit(self, client_id: str, usd: float, *, per_minute: int | None,
              per_hour: int | None, max_usd: float | None) -> int | Refusal:
        """A reservation id, or the limit that refuses it."""
        def run(conn: sqlite3.Connection) -> int | Refusal:
            now = self.clock()  # once the write lock is ours: times follow commit order
            if now - self._pruned >= _PRUNE_EVERY_S:
                conn.execute("DELETE FROM limit_reservations WHERE at <= ?", (now - 3600.0,))
                self._pruned = now
            minute, first_minute, hour, first_hour, spent = conn.execute(
                "SELECT count(*) FILTER (WHERE at > :m), min(at) FILTER (WHERE at > :m),"
                " count(*), min(at), coalesce(sum(usd), 0.0) FROM limit_reservations"
                " WHERE client_id = :c AND at > :h",
                {"m": now - 60.0, "h": now - 3600.0, "c": client_id}).fetchone()
            if per_minute is not None and minute >= per_minute:
                return Refusal("requests_per_minute", per_minute, 60.0 - (now - first_minute))
            if per_hour is not None and hour >= per_hour:
                return Refusal("requests_per_hour", per_hour, 3600.0 - (now - first_hour))
            if max_usd is not None and spent + usd > max_usd:
                return Refusal("max_cost_per_hour_usd", max_usd,
                               self._wait_for(conn, client_id, now, spent + usd - max_usd),
                               spent)
            cur = conn.execute("INSERT INTO limit_reservations (client_id, at, usd)"
                               " VALUES (?, ?, ?)", (client_id, now, usd))
            return int(cur.lastrowid or 0)

        out: int | Refusal = self._immediate(run)
        return out

    def extend(self, reservation_id: int, client_id: str, more_usd: float,
               max_usd: float | None) -> Refusal | None:
        """Add ``more_usd`` to a reservation unless it takes the client past ``max_usd``
        (a negative amount releases, always)."""
        def run(conn: sqlite3.Connection) -> Refusal | None:
            now = self.clock()
            if max_usd is not None and more_usd > 0:
                (spent,) = conn.execute(
                    "SELECT coalesce(sum(usd), 0.0) FROM limit_reservations"
                    " WHERE client_id = ? AND at > ?", (client_id, now - 3600.0)).fetchone()
                if spent + more_usd > max_usd:
                    return Refusal("max_cost_per_hour_usd", max_usd, self._wait_for(
                        conn, client_id, now, spent + more_usd - max_usd), spent)
            conn.execute("UPDATE limit_reservations SET usd = usd + ? WHERE id = ?",
                         (more_usd, reservation_id))
            return None

        out: Refusal | None = self._immediate(run)
        return out

    def reconcile(self, reservation_id: int, usd: float) -> None:
        """The reservation becomes what the request really cost."""
        self._immediate(lambda conn: conn.execute(
            "UPDATE limit_reservations SET usd = ? WHERE id = ?", (usd, reservation_id)))

    def spent_last_hour(self, client_id: str) -> float:
        with self._lock:
            (spent,) = self._conn.execute(
                "SELECT coalesce(sum(usd), 0.0) FROM limit_reservations WHERE client_id = ?"
                " AND at > ?", (client_id, self.clock() - 3600.0)).fetchone()
        return float(spent)

    def close(self) -> None:
        with self._lock:
            if self._open is not None:
                self._open.close()
                self._open = None
