"""Opening a store from what a user gives: a SQLite path or a PostgreSQL URL."""

from __future__ import annotations

from pathlib import Path

from conductor.config import Settings
from conductor.storage.base import LogStore, MemoryLogStore
from conductor.storage.postgres import is_postgres_url
from conductor.storage.sqlstore import SQLStore


def database_of(settings: Settings) -> str:
    """The configured database: ``[storage] url`` if set, else the SQLite ``path``."""
    return settings.storage.url or settings.storage.path


def open_database(where: str | Path, *, store_text: bool = False, check: bool = True,
                  pool_size: int = 10) -> SQLStore:
    """A PostgreSQL store for a ``postgresql://`` URL, else a SQLite store on that file
    (``check``: SQLite's integrity check at open)."""
    if is_postgres_url(where):
        from conductor.storage.postgres import PostgresStore

        return PostgresStore(str(where), store_text=store_text, pool_size=pool_size)
    from conductor.storage.sqlite import SQLiteStore

    return SQLiteStore(where, store_text=store_text, check=check)


def open_store(where: LogStore | str | Path | None, settings: Settings) -> LogStore:
    """A store from what ``Conductor(log_store=...)`` was given: a store as is, a SQLite
    file path or PostgreSQL URL, ``"config"`` for the config's database, or None
    (memory)."""
    if where is None:
        return MemoryLogStore()
    if not isinstance(where, str | Path):
        return where
    target = database_of(settings) if str(where) == "config" else where
    return open_database(target, store_text=settings.storage.store_text,
                         pool_size=settings.storage.pool_size)
