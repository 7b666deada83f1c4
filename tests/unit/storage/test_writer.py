"""The write queue while its database refuses writes: rows wait in memory, bounded, and
are written oldest first once writes work again. The database here is a list that can be
told to fail (the queue only ever calls ``write(batch)``); the SQL stores' own failures are
in tests/integration/test_faults.py (a full disk) and test_postgres_store.py (a restart)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from conductor.errors import StorageError
from conductor.storage.writer import BARRIER, QueuedRow, WriteQueue


class Refused(Exception):
    pass


class Database:
    """Commits batches into ``rows``; refuses while ``down`` (or the next ``fail_next``)."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.down = False
        self.fail_next = 0
        self.lock = threading.Lock()

    def write(self, batch: list[QueuedRow]) -> None:
        with self.lock:
            if self.down or self.fail_next > 0:
                self.fail_next = max(0, self.fail_next - 1)
                raise Refused("no space left on device")
            self.rows.extend(i.row["n"] for i in batch if i.table != BARRIER)


def _queue(db: Database, **options: Any) -> WriteQueue:
    settings = {"batch_rows": 4, "batch_interval_s": 0.005, "drain_timeout_s": 10.0,
                "max_backlog_rows": 1000, "retry_interval_s": 0.01, **options}
    return WriteQueue("test.db", db.write, (Refused,), lambda batch: None, **settings)


def _until(check: Any, what: str) -> None:
    deadline = time.monotonic() + 30.0  # bounds a hang; not a timing claim
    while not check():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.005)


def test_rows_queued_while_writes_fail_are_written_first_and_in_order() -> None:
    db = Database()
    q = _queue(db)
    db.down = True
    for n in range(10):
        q.put("t", {"n": n})
    _until(lambda: q.health()["backlog_rows"] == 10, "all ten wait in memory")
    health = q.health()
    assert not health["writable"] and health["write_failures"] >= 1
    with pytest.raises(StorageError, match="write failed"):
        q.put("t", {"n": -1}, durable=True)  # its caller hears it; it is not kept
    # Writes work again, but the first retry of the backlog still fails once: what it took
    # from the backlog goes back in front, so nothing is reordered.
    db.fail_next, db.down = 1, False
    for n in range(10, 15):
        q.put("t", {"n": n})
    q.flush()
    assert db.rows == list(range(15))
    health = q.health()
    assert health["writable"] and health["backlog_rows"] == 0 and health["rows_dropped"] == 0
    assert q.close()


def test_the_backlog_is_bounded_and_drops_the_oldest() -> None:
    db = Database()
    q = _queue(db, max_backlog_rows=5)
    db.down = True
    for n in range(12):
        q.put("t", {"n": n})
    _until(lambda: q.health()["rows_dropped"] == 7, "seven dropped")
    assert q.health()["backlog_rows"] == 5
    db.down = False
    q.flush()
    assert db.rows == list(range(7, 12))  # the newest five
    assert q.close()
    with pytest.raises(StorageError, match="closed"):
        q.put("t", {"n": 99})
