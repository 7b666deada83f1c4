"""Two `conductor serve` replicas on one PostgreSQL database learn as one router, share
one policy and one set of limits, and survive the loss of either.

Each replica is a real process (Granian, one worker) on its own port, as two hosts behind
a load balancer would be; the database is a throwaway cluster (tests/postgres.py)."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from conductor import Conductor
from conductor.config import load_settings
from conductor.storage.postgres import PostgresStore
from tests.integration.conftest import Serve, states_close, wait_for
from tests.postgres import Cluster

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KEYS = {"ops": "sk-ops-test", "app": "sk-app-test", "acme": "sk-acme-test",
        "spender": "sk-spender-test"}
BUDGET_USD = 0.005
TOLERANCE = 5e-3  # evidence decays per observation; replicas apply events in other orders


def _config(tmp_path: Path) -> Path:
    """The built-in demo world (answers at once), with four clients: an admin, an
    unlimited app, acme at 30 requests a minute, spender at a $0.005 hourly budget."""
    text = (ROOT / "conductor" / "data" / "default.toml").read_text()
    extra = {"ops": "admin = true", "app": "", "acme": "requests_per_minute = 30",
             "spender": f"max_cost_per_hour_usd = {BUDGET_USD}"}
    for name, line in extra.items():
        digest = hashlib.sha256(KEYS[name].encode()).hexdigest()
        text += f'\n[clients.{name}]\napi_key_sha256 = "{digest}"\n{line}\n'
    path = tmp_path / "replicas.toml"
    path.write_text(text)
    return path


class Replica(Serve):
    """One `conductor serve` process on the shared database."""

    def __init__(self, name: str, config: Path, url: str, tmp_path: Path) -> None:
        super().__init__(name, ["--config", str(config), "--db", url], tmp_path)
        self.config, self.db = config, url

    def client(self, who: str = "app") -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=30,
                            headers={"Authorization": f"Bearer {KEYS[who]}"})


@pytest.fixture
def pair(pg_url: str, tmp_path: Path) -> Iterator[tuple[Replica, Replica]]:
    config = _config(tmp_path)
    a, b = Replica("a", config, pg_url, tmp_path), Replica("b", config, pg_url, tmp_path)
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.stop()
        b.stop()


def _ask(client: httpx.Client, i: int, task: str = "classify") -> dict[str, Any]:
    r = client.post("/v1/chat/completions", json={
        "model": "auto", "conductor": {"task_type": task},
        "messages": [{"role": "user", "content": f"Review {i}: is it positive? Great value!"}]})
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def _posterior(client: httpx.Client) -> dict[str, Any]:
    out: dict[str, Any] = client.get("/v1/stats/series").json()["posterior"]
    return out


def test_replicas_share_policy_and_learning_and_restart_as_a_rebuild(
        pair: tuple[Replica, Replica], pg_cluster: Cluster, tmp_path: Path) -> None:
    a, b = pair
    with a.client("ops") as a_ops, b.client("ops") as b_ops:
        # A policy change through A is in force on B (follow_every_s = 0.5 s).
        assert a_ops.put("/v1/policy", json={"freeze": True}).status_code == 200
        took = wait_for(lambda: b_ops.get("/v1/policy").json()["freeze"] is True, "B frozen")
        print(f"a freeze through A was in force on B after {took:.2f} s")
        assert a_ops.put("/v1/policy", json={"freeze": False, "exploration": {
            "classify": 7.0}}).status_code == 200
        wait_for(lambda: b_ops.get("/v1/policy").json()["exploration"].get("classify") == 7.0,
                 "B has A's exploration")

    with a.client() as ca, b.client() as cb:
        served = [(_ask((ca, cb)[i % 2], i, ("classify", "chat")[i % 3 > 0]))
                  for i in range(40)]
        # Feedback sent to A on a request B served moves B's posterior.
        rid, strategy = served[3]["id"], served[3]["conductor"]["strategy"]  # classify, by B
        wait_for(lambda: _posterior(ca)["classify"][strategy]["rewards"] > 0, "A learned")
        before = _posterior(cb)["classify"][strategy]
        assert ca.post("/v1/feedback", json={"request_id": rid, "stars": 1}).status_code == 200
        took = wait_for(lambda: _posterior(cb)["classify"][strategy]["mean"] < before["mean"],
                        "B learned A's feedback")
        print(f"feedback through A moved B's posterior after {took:.2f} s")
        for i, rec in enumerate(served[::4]):  # more ratings, through either replica
            assert (cb, ca)[i % 2].post("/v1/feedback", json={
                "request_id": rec["id"], "stars": 1 + i % 5}).status_code == 200
        # Both hold every event. Each applied its own first, and evidence decays per
        # observation (half-life 5,000), so they agree to ~2e-3, not bit for bit; an event
        # missed or applied twice moves a count by a whole reward.
        wait_for(lambda: states_close(_posterior(ca), _posterior(cb), TOLERANCE), "A and B agree")

    # After a restart of both, the policy is still in force, and each posterior equals
    # a rebuild from an empty state (every committed event, no snapshot).
    a.stop()
    b.stop()
    bare = pg_cluster.copy_without_snapshots(a.db)
    a.start()
    b.start()
    with a.client("ops") as a_ops, b.client("ops") as b_ops:
        for c in (a_ops, b_ops):
            policy = c.get("/v1/policy").json()
            assert policy["exploration"].get("classify") == 7.0 and policy["freeze"] is False
        after_a, after_b = _posterior(a_ops), _posterior(b_ops)
    rebuilt = Conductor(load_settings(a.config), log_store=PostgresStore(bare))
    try:
        expected = rebuilt.quality_intervals()
    finally:
        rebuilt.close()
    assert states_close(after_a, expected, TOLERANCE) and states_close(after_b, expected, TOLERANCE)
    # Not a vacuous comparison: the rebuilt classify posterior holds the requests' rewards
    # (14 classify requests; at exploration 7 they spread over the strategies, so no one
    # strategy is sure to hold many of them).
    assert sum(s["rewards"] for s in expected["classify"].values()) > 10


async def _burst(replicas: tuple[Replica, Replica], who: str, n: int) -> list[int]:
    """``n`` requests at once from client ``who``, alternating between the replicas."""
    limits = httpx.Limits(max_connections=n)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers={
            "Authorization": f"Bearer {KEYS[who]}"}) as client:
        async def one(i: int) -> int:
            r = await client.post(replicas[i % 2].base + "/v1/chat/completions", json={
                "model": "auto", "max_tokens": 16, "conductor": {"task_type": "classify"},
                "messages": [{"role": "user", "content": f"item {i}: positive?"}]})
            assert r.status_code in (200, 429), r.text
            return r.status_code

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def test_limits_and_budgets_hold_exactly_across_replicas(
        pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    codes = asyncio.run(_burst(pair, "acme", 100))
    assert codes.count(200) == 30 and codes.count(429) == 70
    codes = asyncio.run(_burst(pair, "spender", 500))
    assert codes.count(200) > 0 and codes.count(429) > 0
    a.stop()  # drains: every outcome is committed
    b.stop()
    # Probes made on the spender's requests are Conductor's exploration, capped by the
    # judge's hourly budget, not the client's: left out here.
    with psycopg.connect(a.db) as conn:
        (spent,) = conn.execute(
            "SELECT coalesce(sum(o.cost_usd), 0) FROM outcomes o JOIN decisions d"
            " USING (request_id) WHERE d.client_id = 'spender' AND d.routed_by != 'probe'"
        ).fetchone() or (0.0,)
        (reserved,) = conn.execute(
            "SELECT sum(usd) FROM limit_reservations WHERE client_id = 'spender'"
        ).fetchone() or (0.0,)
        (admitted,) = conn.execute(
            "SELECT count(*) FROM decisions WHERE client_id = 'spender'"
            " AND routed_by != 'probe'").fetchone() or (0,)
    print(f"spender: {admitted} admitted of 500, spent ${spent:.6f} of ${BUDGET_USD}")
    assert admitted == codes.count(200)
    assert spent <= BUDGET_USD + 1e-12  # never passed, across both replicas
    assert reserved == pytest.approx(spent, rel=1e-9, abs=1e-12)  # settled to actual cost


def test_kill_9_of_one_replica_loses_no_acknowledged_feedback(
        pair: tuple[Replica, Replica]) -> None:
    a, b = pair
    with b.client() as cb:
        ids = [_ask(cb, i)["id"] for i in range(40)]
    acked: Counter[tuple[str, float]] = Counter()
    gone = threading.Event()

    def rater(k: int) -> None:
        """Rates (and re-rates) requests through A until A is gone."""
        with a.client() as ca:
            n = k
            while not gone.is_set():
                rid, stars = ids[n % len(ids)], 1 + n % 5
                try:
                    r = ca.post("/v1/feedback", json={"request_id": rid, "stars": stars})
                except httpx.TransportError:
                    return  # not acknowledged
                if r.status_code == 200:
                    acked[(rid.removeprefix("chatcmpl-"), (stars - 1) / 4)] += 1
                n += 8

    raters = [threading.Thread(target=rater, args=(k,)) for k in range(8)]
    for t in raters:
        t.start()
    wait_for(lambda: acked.total() >= 60, "feedback acknowledged under load", 60.0)
    a.stop(signal.SIGKILL)  # in the middle of the raters' requests
    gone.set()
    for t in raters:
        t.join()
    with b.client() as cb:  # B keeps serving
        assert [_ask(cb, 100 + i)["object"] for i in range(5)] == ["chat.completion"] * 5
    with psycopg.connect(a.db) as conn:
        stored = Counter((rid, score) for rid, score in conn.execute(
            "SELECT request_id, score FROM rewards WHERE source = 'user'"))
    print(f"{acked.total()} ratings acknowledged before the kill, {stored.total()} stored")
    assert not acked - stored  # every acknowledged rating is stored
