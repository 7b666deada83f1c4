"""SQLite store: the default, one file, every process on one host sharing it.

What is common to SQL stores (the write queue, durability, the event log, reads) is in
``sqlstore``; this opens the file (checked and migrated), reads with one connection per
thread, and writes with one connection owned by the writer thread.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from conductor.errors import SchemaVersionError, StorageError
from conductor.storage.limits import SQLiteLimits
from conductor.storage.schema import MIGRATION_SET, build_migrations
from conductor.storage.sqlstore import (
    SQLStore,
    decision_from_row,
    outcome_from_row,
    reward_from_row,
    sha256,
)


def _open_database(path: Path, check: bool = True) -> Database:
    """Open, check (``PRAGMA quick_check``: a damaged page anywhere, not only at the
    end) and migrate; every failure names the file."""
    if str(path) == ":memory:":  # each connection would open a database of its own
        raise StorageError(":memory:: the store's writer, readers and limits each connect, "
                           "so an in-memory SQLite database cannot be shared; give a file, "
                           "or no database (Conductor(log_store=None) keeps records in "
                           "memory)")
    if not path.parent.is_dir():
        raise StorageError(f"{path}: cannot create the database there: "
                           f"{path.parent} is not a directory")
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        db = Database(conn)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA busy_timeout=5000")
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:  # touches each b-tree's last page: finds most truncations
            db.execute(f'SELECT max(rowid) FROM "{t}"').fetchone()
        if check and tables:
            problems = [r[0] for r in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                said = " ".join("; ".join(problems).split())[:300]  # one line
                raise StorageError(
                    f"{path}: the database is damaged ({said}); restore it "
                    "from a backup, or start anyway with --skip-db-check (damaged rows are "
                    "then skipped where they are read)")
        migrations = build_migrations()
        known = {mig.name for mig in migrations._migrations}
        unknown = [a.name for a in migrations.applied(db) if a.name not in known]
        if unknown:
            raise SchemaVersionError(
                f"{path}: written by a newer Conductor (unknown migrations {unknown}); "
                "upgrade Conductor to open it")
        migrations.apply(db)
        return db
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{path}: not a usable SQLite database: {exc}") from exc
    except OSError as exc:
        raise StorageError(f"{path}: cannot open: {exc}") from exc


class _Tx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()

    def many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        self.conn.executemany(sql, rows)


class SQLiteStore(SQLStore):
    """The default log store for the service. Thread-safe; one writer thread.

    Args:
        path: the database file (created with its parent folder's permissions).
        check: run ``PRAGMA quick_check`` at open and refuse a damaged file.
        The rest: see ``SQLStore``.
    """

    errors = (sqlite3.Error,)

    def __init__(self, path: str | Path, *, check: bool = True, **options: Any) -> None:
        self.path = Path(path)
        super().__init__(str(self.path), **options)
        self._db = _open_database(self.path, check=check)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._limits = SQLiteLimits(self.path)  # connects when a limited client comes
        self._start()

    def render_insert(self, table: str, columns: tuple[str, ...], key: str | None) -> str:
        verb = "INSERT OR REPLACE" if key else "INSERT"
        return (f"{verb} INTO {table} ({', '.join(columns)}) VALUES "
                f"({', '.join(':' + c for c in columns)})")

    def _reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(str(self.path), check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=5000")
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        try:
            return self._reader().execute(sql, params).fetchall()
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"{self.path}: read failed: {exc}") from exc

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[_Tx]:
        with self._db.atomic():
            yield _Tx(self._db.conn)

    def limit_ledger(self) -> SQLiteLimits:
        """The limits every process on this file shares."""
        return self._limits

    def _close_backend(self, drained: bool) -> None:
        if drained:
            self._db.conn.close()
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
        self._limits.close()


__all__ = ["MIGRATION_SET", "SQLiteStore", "decision_from_row", "outcome_from_row",
           "reward_from_row", "sha256"]

