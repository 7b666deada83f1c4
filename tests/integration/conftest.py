"""Fixtures for tests that talk to real servers on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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


class ServedApp:
    """A Litestar app under uvicorn on 127.0.0.1 (a free port), in a background thread."""

    def __init__(self, app: Any) -> None:
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
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
