"""Helpers the load benchmarks share: loopback ports and the fake upstream process."""

from __future__ import annotations

import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def start_upstream(port: int, latency_ms: float) -> subprocess.Popen[bytes]:
    """The fake OpenAI-compatible upstream (conductor.testing) in its own process."""
    p = subprocess.Popen([sys.executable, "-m", "conductor.testing", "--port", str(port),
                          "--latency-ms", str(latency_ms)])
    wait_port(port)
    return p
