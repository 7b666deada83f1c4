"""`conductor serve --workers 2` on one SQLite file: the workers learn as one router.

A keep-alive connection stays with the worker that accepted it, so one client per worker
(told apart by /healthz's pid) says exactly which process answered."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Serve, wait_for

MESSAGES = [{"role": "user", "content": "Is this review positive? Great value!"}]


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    serve = Serve("serve", ["--workers", "2", "--db", str(tmp_path / "shared.db")], tmp_path)
    clients: dict[int, httpx.Client] = {}
    try:
        serve.start()
        for _ in range(200):  # new connections until both workers have one
            client = httpx.Client(base_url=serve.base, timeout=30)
            pid = client.get("/healthz").json()["pid"]
            if pid in clients:
                client.close()
            else:
                clients[pid] = client
            if len(clients) == 2:
                break
        assert len(clients) == 2, "the kernel never handed a connection to the second worker"
        a, b = clients.values()
        yield a, b
    finally:
        for client in clients.values():
            client.close()
        serve.stop()


@pytest.mark.slow
def test_two_workers_share_policy_and_learning(
        two_workers: tuple[httpx.Client, httpx.Client]) -> None:
    a, b = two_workers
    # A policy change through A is in force on B (follow_every_s = 0.5 s by default).
    assert a.put("/v1/policy", json={"freeze": True}).status_code == 200
    took = wait_for(lambda: b.get("/v1/policy").json()["freeze"] is True, "B is frozen")
    print(f"freeze reached the other worker after {took:.2f} s")
    assert a.put("/v1/policy", json={"freeze": False}).status_code == 200
    wait_for(lambda: b.get("/v1/policy").json()["freeze"] is False, "B thaws")

    # Feedback sent to A moves B's posterior for that (task type, strategy).
    answer = a.post("/v1/chat/completions", json={
        "model": "auto", "messages": MESSAGES, "conductor": {"task_type": "classify"}})
    assert answer.status_code == 200, answer.text
    rid = answer.json()["id"]
    strategy = answer.json()["conductor"]["strategy"]

    def posterior(client: httpx.Client) -> tuple[float, float]:
        post = client.get("/v1/stats/series").json()["posterior"]["classify"][strategy]
        return post["mean"], post["rewards"]

    # B follows A's outcome and automatic reward: it holds A's posterior exactly.
    wait_for(lambda: posterior(a)[1] > 0 and posterior(b) == posterior(a), "B follows A")
    before = posterior(a)
    assert a.post("/v1/feedback", json={"request_id": rid, "stars": 1}).status_code == 200
    after = posterior(a)
    assert after[0] < before[0]  # one star replaced a better automatic score
    took = wait_for(lambda: posterior(b) == after, "B has the feedback")
    print(f"feedback reached the other worker after {took:.2f} s")
