"""The PostgreSQL store keeps what the SQLite store keeps, reads it back the same, and
names what is wrong when it cannot open (tests/postgres.py starts the cluster)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest
from click.testing import CliRunner

from conductor.cli import main
from conductor.config import settings_from_dict
from conductor.errors import ConfigError, SchemaVersionError, StorageError
from conductor.storage.base import LogMark
from conductor.storage.postgres import PostgresStore
from conductor.storage.sqlite import SQLiteStore
from conductor.storage.sqlstore import SQLStore
from conductor.types import PolicyEvent, PolicyKnobs, Reward
from tests.records import decision, outcome, request


def _write(store: SQLStore) -> None:
    """One of everything a store keeps (tests/records.py: values that survive only an
    exact round trip)."""
    for k, rid in enumerate(("r1", "r2")):
        store.record_decision(decision(rid, 1000.0 + k), request(rid))
        store.record_outcome(outcome(rid), task_type="classify")
        store.record_reward(Reward(request_id=rid, source="judge", score=0.7 + k / 7,
                                   task_type="classify", strategy="turbo-cheap",
                                   created_at=1002.0 + k))
    store.record_reward(Reward(request_id="r1", source="user", score=0.25, rater="ann",
                               task_type="classify", strategy="turbo-cheap",
                               created_at=1003.0, effective_score=0.25),
                        previous_score=0.7)
    store.record_policy_change(PolicyEvent(knobs=PolicyKnobs(
        version="v2", rollout_percent=50.0, default_strategy="turbo-cheap", freeze=True,
        exploration={"classify": 7.0}), actor="ops"))
    store.record_pending_feedback("later", 1.0, "bob", time.time())
    store.record_judge_call({"request_id": "r1", "created_at": 1.0, "strategy": "turbo-cheap",
                             "model": "gpt-4o-mini", "score": 0.7, "raw_reply": "Score: 7",
                             "cost_usd": 1e-6, "latency_ms": 5.0, "error": None,
                             "self_graded": 1, "answer_chars": 8})
    store.save_snapshot(5, {"posteriors": {"x": [1.5, 2.25]}}, wait=True)
    store.flush()


def _reads(store: SQLStore) -> dict[str, Any]:
    return {
        "requests": [store.get_request(r) for r in ("r1", "r2", "nope")],
        "traffic": list(store.iter_requests()),
        "events": store.events_after(LogMark()),
        "events_of_another": store.events_after(LogMark(origin="other", pos=3)),
        "pairs": store.judge_user_pairs(),
        "pending": [(rid, rater, score) for rid, _, rater, score in store.pending_feedback()],
        "policy": store.latest_policy(),
        "snapshot": store.latest_snapshot(),
        "position": store.log_position(),
        "judge_calls": [tuple(r) for r in store.query(
            "SELECT request_id, score, raw_reply, self_graded FROM judge_calls")],
    }


def test_postgres_reads_back_exactly_what_sqlite_does(pg_url: str, tmp_path: Path) -> None:
    stores: list[SQLStore] = [SQLiteStore(tmp_path / "a.db", store_text=True),
                              PostgresStore(pg_url, store_text=True)]
    for s in stores:
        _write(s)
    lite, pg = (_reads(s) for s in stores)
    assert msgspec.to_builtins(pg) == msgspec.to_builtins(lite)
    assert pg["requests"][0].decision.features == (0.1, -2.5e-7, 3.0)
    assert pg["requests"][0].rewards[-1].score == 0.25 and pg["position"] == 6
    assert len(pg["events"]) == 6 and pg["policy"].knobs.freeze
    for s in stores:
        s.close()
    again = PostgresStore(pg_url, store_text=True)  # a restart reads the same
    assert msgspec.to_builtins(_reads(again)) == msgspec.to_builtins(lite)
    assert again.last_seq() == 6  # and numbers its events after the stored ones
    again.close()


def test_export_and_stats_read_the_same_traffic_from_either_database(
        pg_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    out: dict[str, Any] = {}
    for name, db in (("sqlite", str(tmp_path / "demo.db")), ("postgres", pg_url)):
        ran = runner.invoke(main, ["demo", "--requests", "60", "--seed", "3", "--db", db])
        assert ran.exit_code == 0, ran.output
        path = tmp_path / f"{name}.jsonl"
        exported = runner.invoke(main, ["export", "--db", db, "--out", str(path)])
        stats = runner.invoke(main, ["stats", "--db", db, "--json"])
        assert stats.exit_code == 0, stats.output
        lines = [msgspec.json.decode(ln) for ln in path.read_bytes().splitlines()]
        # The demo's 60 requests, and the probes made on them (logged as requests).
        assert exported.output.strip() == f"wrote {len(lines)} requests to {path}"
        assert sum(r["decision"]["routed_by"] != "probe" for r in lines) == 60
        assert msgspec.json.decode(stats.output)["counters"]["probes_total"] == len(lines) - 60
        out[name] = ([(r["decision"]["strategy"], r["decision"]["propensity"],
                       r["outcome"]["cost_usd"], [w["score"] for w in r["rewards"]])
                      for r in lines], msgspec.json.decode(stats.output)["counters"])
    assert out["postgres"] == out["sqlite"]  # the seeded demo: the same decisions
    assert out["postgres"][1]["outcomes_total"] == 60


def test_a_database_written_by_a_newer_conductor_is_refused(pg_url: str) -> None:
    PostgresStore(pg_url).close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("INSERT INTO conductor_migrations VALUES ('9999_future', 0)")
    with pytest.raises(SchemaVersionError, match=r"unknown migrations .*9999_future"):
        PostgresStore(pg_url)


def test_an_unreachable_database_is_one_line_without_the_password(pg_url: str) -> None:
    url = "postgresql://conductor:hunter2@127.0.0.1:1/nowhere"
    with pytest.raises(StorageError) as info:
        PostgresStore(url, connect_timeout_s=2.0)
    assert "postgresql://conductor@127.0.0.1:1/nowhere: cannot connect" in str(info.value)
    assert "hunter2" not in str(info.value)
    result = CliRunner().invoke(main, ["stats", "--db", url])
    assert result.exit_code == 1 and "hunter2" not in result.output
    assert result.output.count("\n") == 1 and "cannot connect" in result.output


def test_storage_url_must_be_a_postgresql_url() -> None:
    from conductor.config import default_settings

    data = msgspec.to_builtins(default_settings())
    data["storage"]["url"] = "mysql://db/x"
    with pytest.raises(ConfigError, match=r"storage\.url: expected a PostgreSQL URL"):
        settings_from_dict(data, source="test")


@pytest.mark.slow
def test_a_database_restart_under_load_costs_no_request_and_no_row() -> None:
    """The server restarts (every pooled connection is cut): answers go on, a policy
    change and feedback are not refused for a stale connection, and every row reaches
    the log."""
    from conductor import Conductor, default_settings
    from tests.integration.conftest import wait_for
    from tests.postgres import start_cluster

    cluster = start_cluster()  # its own: the restart must not cut other tests' databases
    try:
        url = cluster.new_database()
        s = default_settings()  # no follower: nothing but the requests finds the cut
        s = msgspec.structs.replace(s, storage=msgspec.structs.replace(
            s.storage, follow_every_s=0.0))
        c = Conductor(s, seed=1, log_store=PostgresStore(url))
        ids = [c.complete(f"review {i}: good?", task_type="classify").request_id
               for i in range(20)]
        c.feedback(ids[0], stars=5)  # every pooled connection has been used
        c.books.wait_idle()  # nothing in the background: the next write is the policy's
        c.wait_for_judges()
        c.log_store.flush()
        cluster.restart()
        # A durable write meets a cut connection first (a snapshot: no log event); then a
        # policy change.
        c.snapshot()
        c.update_policy(freeze=False, actor="ops")
        ids += [c.complete(f"review {i}: good?", task_type="classify").request_id
                for i in range(20, 40)]
        for rid in ids[1:6]:
            c.feedback(rid, stars=2)  # acknowledged: committed, no 503
        store = c.log_store
        assert isinstance(store, PostgresStore)
        wait_for(lambda: store.write_health()["backlog_rows"] == 0, "the backlog is written")
        c.close()
        with psycopg.connect(url) as conn:
            (decisions,) = conn.execute(  # the requests served (not the probes made on them)
                "SELECT count(*) FROM decisions WHERE routed_by != 'probe'").fetchone() or (0,)
            (users,) = conn.execute(
                "SELECT count(*) FROM rewards WHERE source = 'user'").fetchone() or (0,)
        assert decisions == 40 and users == 6
    finally:
        cluster.stop()
