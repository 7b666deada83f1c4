"""Fixtures for tests that talk to real servers on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from conductor.config import Settings, settings_from_dict
from conductor.testing import Behaviour, FakeUpstream


@pytest.fixture
def upstream() -> Iterator[FakeUpstream]:
    up = FakeUpstream(Behaviour()).start()
    try:
        yield up
    finally:
        up.stop()


def fake_settings(base_url: str, *, first_byte_s: float = 5.0, total_s: float = 10.0,
                  attempts: int = 3, backoff_s: float = 0.01, window_ms: float = 100.0,
                  max_batch: int = 10, task_types: dict[str, Any] | None = None,
                  **policy: Any) -> Settings:
    """Two models on the fake upstream and the four kinds of strategy."""
    return settings_from_dict({
        "providers": {"fake": {
            "kind": "openai", "base_url": base_url,
            "timeouts": {"connect_s": 2.0, "first_byte_s": first_byte_s, "idle_s": first_byte_s,
                         "total_s": total_s},
            "retry": {"max_attempts": attempts, "backoff_initial_s": backoff_s,
                      "backoff_max_s": 1.0},
            "circuit": {"consecutive_failures": 3, "cooldown_s": 60.0},
        }},
        "models": {
            "cheap": {"provider": "fake", "input_usd_per_1m": 1.0, "output_usd_per_1m": 2.0},
            "strong": {"provider": "fake", "input_usd_per_1m": 10.0, "output_usd_per_1m": 30.0},
        },
        "strategies": {
            "direct-cheap": {"model": "cheap", "prior_quality": 0.9},
            "direct-strong": {"model": "strong", "prior_quality": 0.95},
            "batch-cheap": {"model": "cheap", "mode": "batch", "prior_quality": 0.9,
                            "batch": {"window_ms": window_ms, "max_batch": max_batch,
                                      "discount": 0.5}},
            "verified": {"model": "cheap", "mode": "verified", "prior_quality": 0.9,
                         "verified": {"draft": "direct-cheap", "escalate_to": "direct-strong",
                                      "accept_score": 0.5}},
        },
        "policy": {"default_strategy": "direct-strong", "max_fallback_cost_ratio": 1000.0,
                   **policy},
        "task_types": task_types or {},
    }, source="test")


def judged_chat_settings(base_url: str, **policy: Any) -> Settings:
    """``fake_settings`` narrowed to a two-strategy world on ``chat``: the cheap and the
    strong model, flat quality priors (what an operator knows: nothing), a judge (the
    strong model) grading every answer, and a target of 0.95 of the strong model's
    quality. ``policy`` goes to ``[policy]``."""
    data = msgspec.to_builtins(fake_settings(base_url, attempts=1, **policy))
    data["judge"] = {"strategy": "direct-strong", "workers": 2, "queue_size": 5000,
                     "max_calls_per_hour": 100_000}
    for name in ("direct-cheap", "direct-strong"):
        data["strategies"][name]["prior_quality"] = 0.5
    data["task_types"]["chat"] = {
        "judge_sample_rate": 1.0, "strategies": ["direct-cheap", "direct-strong"],
        "quality_target": {"relative_to": "direct-strong", "ratio": 0.95}}
    return settings_from_dict(data)


def free_port() -> int:
    """A port on 127.0.0.1 nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], bool], what: str, timeout_s: float = 30.0) -> float:
    """Poll until ``check`` holds; the seconds it took. The timeout bounds a hang (a
    state change, not a timing claim)."""
    t0 = time.monotonic()
    while not check():
        if time.monotonic() - t0 > timeout_s:
            raise AssertionError(f"never: {what}")
        time.sleep(0.02)
    return time.monotonic() - t0


def states_close(a: Any, b: Any, rel: float = 1e-9) -> bool:
    """Two learned states (``Conductor.state()``) equal up to ``rel`` in every number."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(states_close(a[k], b[k], rel) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(states_close(x, y, rel)
                                        for x, y in zip(a, b, strict=True))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= rel * max(1.0, abs(a), abs(b))
    return bool(a == b)


def without_snapshots(db: Path, out: Path) -> Path:
    """A copy of a database with its posterior snapshots deleted: opening it rebuilds the
    learned state from every committed event."""
    shutil.copy(db, out)
    conn = sqlite3.connect(out)
    conn.execute("DELETE FROM posterior_snapshots")
    conn.commit()
    conn.close()
    return out


class ServedApp:
    """A Litestar app under uvicorn on 127.0.0.1 (a free port), in a background thread."""

    def __init__(self, app: Any) -> None:
        import threading

        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServedApp:
        import time

        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class Serve:
    """A `conductor serve` process of its own (``args`` after ``serve``) on a free port,
    its output in ``tmp_path/name.log``; ``stop`` signals its whole process group."""

    def __init__(self, name: str, args: list[str], tmp_path: Path) -> None:
        self.name, self.args = name, args
        self.port = free_port()
        self.logfile = tmp_path / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.base = f"http://127.0.0.1:{self.port}"

    def start(self) -> Serve:
        root = Path(__file__).resolve().parents[2]
        with self.logfile.open("a") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).with_name("conductor")), "serve", *self.args,
                 "--port", str(self.port)], cwd=self.logfile.parent, stdout=log, stderr=log,
                env={**os.environ, "PYTHONPATH": str(root)}, start_new_session=True)
        wait_for(self._ready, f"{self.name} is ready", 60.0)
        return self

    def _ready(self) -> bool:
        assert self.proc is not None and self.proc.poll() is None, self.logfile.read_text()
        try:
            return httpx.get(self.base + "/readyz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self.proc = None
