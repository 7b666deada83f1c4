"""Where decisions, outcomes and rewards are kept: SQLite (the service), JSONL, memory."""

from conductor.storage.base import LogStore, MemoryLogStore, RequestRecord
from conductor.storage.jsonl import JSONLLogStore, read_log
from conductor.storage.sqlite import SQLiteStore

__all__ = ["JSONLLogStore", "LogStore", "MemoryLogStore", "RequestRecord", "SQLiteStore",
           "read_log"]
