"""Where decisions, outcomes and rewards are kept."""

from conductor.storage.base import LogStore, MemoryLogStore, RequestRecord

__all__ = ["LogStore", "MemoryLogStore", "RequestRecord"]
