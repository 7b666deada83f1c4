"""JSONL log store: one JSON object per decision, outcome and reward; append-only.

Lines are written whole and flushed (line-buffered); the file rotates when it passes
``max_bytes`` (``log.jsonl`` -> ``log.jsonl.1`` -> ...). ``read_log`` reads a file and its
rotations oldest first; a torn last line (a crash mid-write) is skipped with a warning.

Record shapes: ``{"type": "decision", "decision": {...}, "request": {...}}``,
``{"type": "outcome", "task_type": ..., "outcome": {...}}``, ``{"type": "reward", ...}``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import msgspec

from conductor.errors import StorageError
from conductor.storage.base import BaseLogStore, RequestRecord
from conductor.types import CompletionRequest, Decision, Outcome, Reward

log = logging.getLogger("conductor.storage")


class JSONLLogStore(BaseLogStore):
    """An append-only JSONL log. Thread-safe; ``get_request`` answers for this process's
    own records (kept in memory), so feedback works with it too."""

    def __init__(self, path: str | Path, *, max_bytes: int = 100 * 2**20, backups: int = 5,
                 store_text: bool = False) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.store_text = store_text
        self._lock = threading.Lock()
        self._enc = msgspec.json.Encoder()
        self._records: dict[str, RequestRecord] = {}
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("ab", buffering=0)
        except OSError as exc:
            raise StorageError(f"{self.path}: cannot open log: {exc}") from exc

    def _write(self, obj: dict[str, Any]) -> None:
        line = self._enc.encode(obj) + b"\n"
        with self._lock:
            if self._file.tell() + len(line) > self.max_bytes and self._file.tell() > 0:
                self._rotate()
            self._file.write(line)  # unbuffered: one write per line

    def _rotate(self) -> None:
        self._file.close()
        for i in range(self.backups - 1, 0, -1):
            src = self.path.with_name(f"{self.path.name}.{i}")
            if src.exists():
                src.replace(self.path.with_name(f"{self.path.name}.{i + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
        self._file = self.path.open("ab", buffering=0)

    def record_decision(self, decision: Decision, request: CompletionRequest) -> None:
        with self._lock:
            self._records[decision.request_id] = RequestRecord(
                request_id=decision.request_id, decision=decision, rewards=[])
        req: dict[str, Any] = {"client_id": request.client_id, "task_type": request.task_type,
                               "metadata": request.metadata}
        if self.store_text:
            req["prompt"] = request.text()
        self._write({"type": "decision", "decision": decision, "request": req})

    def record_outcome(self, outcome: Outcome, *, task_type: str = "",
                       applied: bool = True) -> None:
        with self._lock:
            rec = self._records.get(outcome.request_id)
            if rec is not None:
                rec.outcome = outcome
        if not self.store_text:
            outcome = msgspec.structs.replace(outcome, text="")
        self._write({"type": "outcome", "task_type": task_type, "applied": applied,
                     "outcome": outcome})

    def record_reward(self, reward: Reward, *, applied: bool = True,
                      previous_score: float | None = None, wait: bool | None = None,
                      pair: tuple[float, float] | None = None,
                      previous_source: str | None = None) -> Future[None] | None:
        with self._lock:
            rec = self._records.get(reward.request_id)
            if rec is not None:
                rec.rewards.append(reward)
        self._write({"type": "reward", "applied": applied, "previous_score": previous_score,
                     "previous_source": previous_source, "reward": reward})
        return None

    def get_request(self, request_id: str) -> RequestRecord | None:
        with self._lock:
            return self._records.get(request_id)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()


def log_files(path: str | Path) -> list[Path]:
    """A log and its rotations, oldest first."""
    p = Path(path)
    rotated = sorted((q for q in p.parent.glob(p.name + ".*") if q.suffix[1:].isdigit()),
                     key=lambda q: -int(q.suffix[1:]))
    return [*rotated, p] if p.exists() else rotated


def read_log(path: str | Path) -> Iterator[dict[str, Any]]:
    """Every record of a JSONL log (and its rotations), oldest first.

    A torn line at the end of a file is skipped with a warning; a bad line elsewhere
    is an error naming the file and line.
    """
    files = log_files(path)
    if not files:
        raise StorageError(f"{path}: no such log file")
    dec = msgspec.json.Decoder()
    for f in files:
        with f.open("rb") as fh:
            lines = fh.read().split(b"\n")
        last = len(lines) - 1
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                obj = dec.decode(line)
            except msgspec.DecodeError as exc:
                if i == last:  # no newline after it: the write was cut short
                    log.warning("%s: skipping torn last line %d (%s)", f, i + 1, exc)
                    continue
                raise StorageError(f"{f}:{i + 1}: not valid JSON: {exc}") from exc
            if isinstance(obj, dict):
                yield obj
