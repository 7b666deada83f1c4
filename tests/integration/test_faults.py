"""Faults and hostile input against the real service: a hanging upstream, fallbacks
against a budget, prompts too long for every window, JSON nested to blow the decoder."""

from __future__ import annotations

import asyncio
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import numpy as np
import pytest

from conductor.config import settings_from_dict
from conductor.service.app import create_app
from conductor.testing import FakeUpstream
from tests.integration.conftest import ServedApp, fake_settings, free_port, wait_for

KEY = "sk-frugal-budget"


def test_a_hanging_upstream_answers_504_within_the_deadline(upstream: FakeUpstream,
                                                             tmp_path: Path) -> None:
    """The provider's own timeouts are long (30 s to the first byte, as by default); a
    2,000 ms budget bounds the whole request, retries and fallbacks included, whole or
    streamed, and the error names the deadline."""
    upstream.behaviour.hang = True
    settings = fake_settings(upstream.base_url, first_byte_s=30.0, total_s=60.0)
    body = {"messages": [{"role": "user", "content": "x"}],
            "conductor": {"max_latency_ms": 2000}}
    with ServedApp(create_app(settings, db_path=tmp_path / "h.db")) as s, httpx.Client(
            base_url=s.url, timeout=60) as h:
        for stream in (False, True, False, True):
            t0 = time.monotonic()
            r = h.post("/v1/chat/completions", json={**body, "stream": stream})
            elapsed = time.monotonic() - t0
            assert r.status_code == 504, r.text  # a stream fails before its first byte
            assert "deadline (2000 ms, max_latency_ms)" in r.json()["error"]["message"]
            # Not the upstream's 30 s timeout (which it was before deadlines): a bound far
            # from both, so a busy machine cannot fail it.
            assert elapsed < 10.0, elapsed


def test_fallbacks_never_take_a_client_over_its_budget(upstream: FakeUpstream,
                                                       tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every request's first choice fails and falls back to a dearer strategy; 30 at once.
    Each fallback reserves its own upper bound first, so spend stays within the budget
    and what cannot fit is a 429 naming it.

    30, not more: the cheap first choices' reservations (~$0.0006 each) then hold at most
    $0.018 of the budget, so the first fallback (~$0.009) always fits and is served. With 80
    they could hold all of it, and every fallback would be refused (a race, seen once)."""
    monkeypatch.setenv("TEST_FRUGAL_KEY", KEY)
    budget = 0.03  # ~3 answers of the dear strategy; admission alone lets all 30 through
    data = msgspec.to_builtins(fake_settings(upstream.base_url, attempts=1))
    data["clients"] = {"frugal": {"api_key_env": "TEST_FRUGAL_KEY",
                                  "max_cost_per_hour_usd": budget}}
    data["policy"]["default_strategy"] = "direct-cheap"
    upstream.behaviour.fail_models = {"cheap"}
    upstream.behaviour.latency_s = 0.05
    upstream.behaviour.answer = "word " * 200  # ~250 tokens: $0.0076 on the strong model
    db = tmp_path / "b.db"

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=30,
                                     headers={"Authorization": f"Bearer {KEY}"}) as h:
            return await asyncio.gather(*(h.post("/v1/chat/completions", json={
                "model": "auto", "messages": [{"role": "user", "content": f"q {i}"}],
                "max_tokens": 300, "conductor": {"task_type": "chat"}}) for i in range(30)))

    with ServedApp(create_app(settings_from_dict(data), db_path=db)) as s:
        responses = asyncio.run(burst(s.url))
    codes = [r.status_code for r in responses]
    assert codes.count(200) >= 1 and codes.count(429) >= 1, codes
    assert set(codes) <= {200, 429}
    refused = [r.json()["error"] for r in responses if r.status_code == 429]
    assert all(e["code"] == "max_cost_per_hour_usd" for e in refused)
    assert any("fallback" in e["message"] for e in refused)  # refused at the fallback
    conn = sqlite3.connect(db)
    spent, fell_back = conn.execute(
        "SELECT sum(cost_usd), sum(fallback_used) FROM outcomes").fetchone()
    conn.close()
    assert fell_back >= 1 and 0 < spent <= budget


def test_a_prompt_longer_than_every_window_is_a_400_naming_the_largest(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    data = msgspec.to_builtins(fake_settings(upstream.base_url))
    data["models"]["cheap"]["context_window"] = 1000
    data["models"]["strong"]["context_window"] = 4000
    with ServedApp(create_app(settings_from_dict(data), db_path=tmp_path / "w.db")) as s, \
            httpx.Client(base_url=s.url, timeout=10) as h:
        def ask(words: int, **extra: object) -> httpx.Response:
            return h.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "word " * words}], **extra})

        fits_strong = ask(2000)  # ~2,500 tokens: only the strong model's window
        assert fits_strong.status_code == 200, fits_strong.text
        assert fits_strong.headers["x-conductor-strategy"] == "direct-strong"
        assert upstream.requests[-1]["model"] == "strong"
        too_long = ask(4000)
        assert too_long.status_code == 400
        msg = too_long.json()["error"]["message"]
        assert "the largest is 4000 tokens (direct-strong)" in msg
        with_room = ask(2000, max_tokens=2000)  # the answer must fit too
        assert with_room.status_code == 400
        forced = ask(2000, model="direct-cheap")
        assert forced.status_code == 400 and "strategy 'direct-cheap'" in forced.text


def test_deeply_nested_json_is_a_400(upstream: FakeUpstream, tmp_path: Path) -> None:
    nested = "[" * 1000 + "]" * 1000
    with ServedApp(create_app(fake_settings(upstream.base_url),
                              db_path=tmp_path / "n.db")) as s, httpx.Client(
            base_url=s.url, timeout=10) as h:
        for path, body in (
                ("/v1/chat/completions", '{"messages": [], "metadata": ' + nested + "}"),
                ("/v1/complete", '{"prompt": "x", "metadata": ' + nested + "}"),
                ("/v1/feedback", '{"request_id": ' + nested + "}")):
            r = h.post(path, content=body, headers={"content-type": "application/json"})
            assert r.status_code == 400, (path, r.text)
            assert r.json()["error"]["message"] == "request body: JSON nested too deeply"
        assert h.get("/healthz").status_code == 200


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MB tmpfs, so the disk can really fill up (root only, as in CI)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(disk)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must be able to mount a tmpfs: {mounted.stderr}")
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    # Unbuffered: a buffered file that hit ENOSPC raises again when it is closed.
    with filler.open("wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 65536)
        except OSError:
            pass
    return filler


def test_a_full_disk_drains_the_replica_keeps_acked_feedback_and_recovers(
        upstream: FakeUpstream, small_disk: Path) -> None:
    db = small_disk / "c.db"
    body = {"messages": [{"role": "user", "content": "hello"}]}
    with ServedApp(create_app(fake_settings(upstream.base_url), db_path=db)) as s, \
            httpx.Client(base_url=s.url, timeout=30) as h:
        ids = [h.post("/v1/chat/completions", json=body).headers["x-conductor-request-id"]
               for _ in range(5)]
        assert h.get("/readyz").status_code == 200
        filler = _fill(small_disk)
        answered, acked, refused = [], [], 0
        for i in range(60):  # answers go on; their rows wait in memory
            r = h.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, r.text
            answered.append(r.headers["x-conductor-request-id"])
            fb = h.post("/v1/feedback", json={"request_id": ids[i % 5], "stars": 1 + i % 5,
                                              "rater": f"r{i}"})
            if fb.status_code == 200:
                acked.append(f"r{i}")
            else:
                assert fb.status_code == 503, fb.text  # not acknowledged: not committed
                refused += 1
        wait_for(lambda: h.get("/readyz").status_code == 503, "readyz turns 503")
        assert "writes failing" in h.get("/readyz").json()["store"]
        store = h.get("/v1/stats").json()["store"]
        assert store["write_failures"] > 0 and store["backlog_rows"] > 0
        assert store["rows_dropped"] == 0
        assert refused > 0
        metrics = h.get("/metrics").text
        assert "conductor_store_writable 0.0" in metrics
        filler.unlink()  # space comes back: the backlog is written, no restart
        wait_for(lambda: h.get("/readyz").status_code == 200, "readyz recovers")
        assert h.get("/v1/stats").json()["store"]["backlog_rows"] == 0
    conn = sqlite3.connect(db)
    stored = {r[0] for r in conn.execute("SELECT request_id FROM decisions")}
    raters = {r[0] for r in conn.execute("SELECT rater FROM rewards WHERE source = 'user'")}
    conn.close()
    assert set(ids + answered) <= stored  # every answered request's decision was kept
    assert set(acked) <= raters  # no acknowledged feedback lost


@pytest.mark.slow
def test_slow_header_clients_are_cut_while_normal_requests_go_on(upstream: FakeUpstream,
                                                                 tmp_path: Path) -> None:
    """`conductor serve` (Granian): 200 sockets trickling a header byte every half second
    are closed once the 2 s header timeout passes; normal requests are answered meanwhile."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'''
[providers.up]
kind = "openai"
base_url = "{upstream.base_url}"
[models.m]
provider = "up"
input_usd_per_1m = 1.0
output_usd_per_1m = 1.0
[strategies.s]
model = "m"
[policy]
default_strategy = "s"
''')
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "conductor.cli", "serve", "--config",
                             str(cfg), "--db", str(tmp_path / "s.db"), "--port", str(port),
                             "--header-timeout-s", "2"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    slow: list[socket.socket] = []
    try:
        wait_for(lambda: _up(url), "the server starts")
        for _ in range(200):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            slow.append(sock)
        started = time.monotonic()
        latencies, open_counts = [], []
        with httpx.Client(base_url=url, timeout=10) as h:
            while time.monotonic() - started < 5.0:
                t0 = time.monotonic()
                r = h.post("/v1/chat/completions", json={
                    "messages": [{"role": "user", "content": "hi"}]})
                assert r.status_code == 200, r.text
                latencies.append(time.monotonic() - t0)
                open_counts.append(sum(_trickle(sock) for sock in slow))
                time.sleep(0.5)
        assert open_counts[0] >= 150  # held open at first (the server accepted them all)
        assert open_counts[-1] == 0  # and all were cut by the header timeout
        assert len(latencies) >= 5 and float(np.median(latencies)) < 1.0
    finally:
        for sock in slow:
            sock.close()
        proc.terminate()
        proc.wait(30)


def _up(url: str) -> bool:
    try:
        return httpx.get(url + "/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _trickle(sock: socket.socket) -> bool:
    """Send one more byte of a header value; whether the server still holds the
    connection (the request stays valid and never ends)."""
    try:
        sock.sendall(b"a")
        sock.settimeout(0.01)
        try:
            return sock.recv(1) != b""
        except TimeoutError:
            return True
    except OSError:
        return False
