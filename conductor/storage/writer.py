"""The write queue of a SQL log store: one thread commits queued rows in batches.

A batch closes at ``batch_rows`` rows, after ``batch_interval_s``, or at a durable row (its
caller waits for the commit). While commits fail (a full disk, a lost database), rows wait
in memory up to ``max_backlog_rows`` (the oldest beyond it are dropped and counted) and are
retried every ``retry_interval_s``, oldest first, before anything newer; a durable row's
caller gets the error instead. What to commit, and how, is the store's business: the queue
calls ``write(batch)`` and knows nothing of SQL.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import msgspec

from conductor.errors import StorageError

log = logging.getLogger("conductor.storage")
BARRIER = "_barrier"  # a queue marker: commit everything before it, write nothing


class QueuedRow(msgspec.Struct):
    table: str
    row: dict[str, Any]
    done: Future[None] | None = None


class WriteQueue:
    """Rows queued by any thread, committed by one.

    Args:
        where: the database, as messages name it.
        write: commits a batch in one transaction; raises one of ``errors`` if it fails.
        errors: what ``write`` raises when the database refuses (anything else is a bug).
        written: called with each committed batch, on the writer thread.
    """

    def __init__(self, where: str, write: Callable[[list[QueuedRow]], None],
                 errors: tuple[type[Exception], ...],
                 written: Callable[[list[QueuedRow]], None], *, batch_rows: int,
                 batch_interval_s: float, drain_timeout_s: float, max_backlog_rows: int,
                 retry_interval_s: float) -> None:
        self.where = where
        self._write = write
        self.errors = errors
        self._on_written = written
        self.batch_rows = batch_rows
        self.batch_interval_s = batch_interval_s
        self.drain_timeout_s = drain_timeout_s
        self.max_backlog_rows = max_backlog_rows
        self.retry_interval_s = retry_interval_s
        self._queue: queue.Queue[QueuedRow | None] = queue.Queue()
        self._backlog: deque[QueuedRow] = deque()  # rows waiting for writes to work again
        self.rows_written = 0
        self.rows_failed = 0  # rows in commits that failed (each retry counts again)
        self.rows_dropped = 0  # rows lost: beyond the backlog bound, or unwritten at close
        self.write_failures = 0  # failed commits
        self.failing_since: float | None = None  # monotonic; None while writes work
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="conductor-store-writer",
                                       daemon=True)
        self.thread.start()

    def put(self, table: str, row: dict[str, Any], *, durable: bool = False,
            wait: bool = True) -> Future[None] | None:
        """Queue a row. A durable row gets a future resolved on commit; ``wait`` blocks on it."""
        if self.closed:
            raise StorageError(f"{self.where}: store is closed")
        done: Future[None] | None = Future() if durable else None
        self._queue.put(QueuedRow(table=table, row=row, done=done))
        if done is not None and wait:
            done.result()
            return None
        return done

    def flush(self) -> None:
        """Return when everything queued so far is committed."""
        self.put(BARRIER, {}, durable=True)

    def health(self) -> dict[str, Any]:
        """``writable`` is false from a failed commit until one succeeds; then the
        counters and the rows waiting in memory."""
        since = self.failing_since
        return {"writable": since is None,
                "failing_for_s": 0.0 if since is None else time.monotonic() - since,
                "write_failures": self.write_failures, "rows_failed": self.rows_failed,
                "rows_dropped": self.rows_dropped, "backlog_rows": len(self._backlog),
                "rows_written": self.rows_written}

    def close(self) -> bool:
        """Drain the queue (bounded by ``drain_timeout_s``); True if the writer finished."""
        self.closed = True
        before = self.rows_written
        self._queue.put(None)
        self.thread.join(self.drain_timeout_s)
        if self.thread.is_alive():
            log.error("%s: drain timed out after %.1fs with about %d rows unwritten",
                      self.where, self.drain_timeout_s, self._queue.qsize())
            return False
        log.info("%s: drained %d queued rows on close (%d rows written in all)",
                 self.where, self.rows_written - before, self.rows_written)
        return True

    def _run(self) -> None:
        while True:
            try:  # while failing, wake up to retry the backlog
                first = self._queue.get(timeout=self.retry_interval_s if self._backlog
                                        else None)
            except queue.Empty:
                self._retry_backlog()
                continue
            if first is None:
                self._retry_backlog()
                return
            batch = [first]
            deadline = time.monotonic() + self.batch_interval_s
            stop = False
            while len(batch) < self.batch_rows:
                timeout = deadline - time.monotonic()
                if timeout <= 0:
                    break
                try:
                    item = self._queue.get(timeout=timeout)
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
                if item.done is not None:  # someone waits: commit now
                    break
            self._commit(batch)
            if stop:
                return

    def _retry_backlog(self) -> None:
        """Write what waited while writes failed, oldest first, in batches."""
        while self._backlog:
            batch = [self._backlog.popleft()
                     for _ in range(min(self.batch_rows, len(self._backlog)))]
            try:
                self._write(batch)
            except self.errors:
                self.write_failures += 1
                self.rows_failed += len(batch)
                self._backlog.extendleft(reversed(batch))
                return
            self._written(batch)

    def _failed(self, batch: list[QueuedRow], exc: Exception | str) -> None:
        """A commit failed: durable rows fail their callers, the rest wait in the backlog
        (bounded: the oldest beyond it are dropped, counted). Logged once per burst."""
        self.write_failures += 1
        self.rows_failed += len(batch)
        if self.failing_since is None:
            self.failing_since = time.monotonic()
            log.error("%s: writes are failing (%s); rows wait in memory (up to %d) and are "
                      "retried every %.1f s", self.where, exc, self.max_backlog_rows,
                      self.retry_interval_s)
        for item in batch:
            if item.done is not None:
                item.done.set_exception(StorageError(f"{self.where}: write failed: {exc}"))
            elif item.table != BARRIER:
                self._backlog.append(item)
        while len(self._backlog) > self.max_backlog_rows:
            self._backlog.popleft()
            self.rows_dropped += 1

    def _commit(self, batch: list[QueuedRow]) -> None:
        if self._backlog:  # keep the order: the backlog goes first
            self._retry_backlog()
            if self._backlog:
                self._failed(batch, "the rows before them could not be written yet")
                return
        try:
            self._write(batch)
        except self.errors as exc:
            self._failed(batch, exc)
            return
        self._written(batch)

    def _written(self, batch: list[QueuedRow]) -> None:
        if self.failing_since is not None and not self._backlog:
            log.warning("%s: writes work again after %.0f s (%d rows dropped meanwhile)",
                        self.where, time.monotonic() - self.failing_since, self.rows_dropped)
            self.failing_since = None
        self.rows_written += len(batch)
        self._on_written(batch)
        for item in batch:
            if item.done is not None:
                item.done.set_result(None)
