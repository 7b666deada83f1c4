"""SQLite store: round trips, migrations, corruption, concurrency, restart equivalence."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import msgspec
import pytest
from sqlite_utils import Database

from conductor import Conductor
from conductor.errors import SchemaVersionError, StorageError
from conductor.storage.base import LogMark
from conductor.storage.schema import build_migrations
from conductor.storage.sqlite import SQLiteStore, sha256
from conductor.types import PolicyEvent, PolicyKnobs, Reward
from tests.records import decision, outcome, request


def test_every_record_type_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = SQLiteStore(path, store_text=True)
    store.record_decision(decision("r1"), request("r1"))
    store.record_outcome(outcome("r1"), task_type="classify")
    auto = Reward(request_id="r1", source="heuristic", score=1.0, task_type="classify",
                  strategy="turbo-cheap", created_at=1002.0)
    user = Reward(request_id="r1", source="user", score=0.75, rater="ann",
                  sampling_probability=1.0, task_type="classify", strategy="turbo-cheap",
                  created_at=1003.0)
    store.record_reward(auto)
    store.record_reward(user)  # durable: committed when this returns
    store.record_judge_call({"request_id": "r1", "created_at": 1004.0, "strategy": "judge",
                             "model": "gpt-4o", "score": 0.8, "raw_reply": "Score: 8",
                             "cost_usd": 1e-4, "latency_ms": 300.0, "error": None,
                             "self_graded": 0, "answer_chars": 8})
    knobs = PolicyKnobs(version="v2", rollout_percent=50.0, default_strategy="turbo-cheap",
                        freeze=False, exploration={"chat": 0.5})
    store.record_policy_change(PolicyEvent(knobs=knobs, actor="admin"))
    store.save_snapshot(2, {"tasks": {}}, wait=True)
    store.close()

    again = SQLiteStore(path)
    rec = again.get_request("r1")
    assert rec is not None
    assert rec.decision == decision("r1")
    assert rec.outcome == outcome("r1")
    assert rec.rewards == [auto, user]
    assert rec.prompt == "Great value!"
    row = again.query("SELECT prompt_sha256, metadata FROM requests")[0]
    assert row["prompt_sha256"] == sha256("Great value!")
    assert msgspec.json.decode(row["metadata"]) == {"labels": ["positive", "negative"]}
    assert again.query("SELECT score, raw_reply FROM judge_calls")[0][:] == (0.8, "Score: 8")
    assert again.query("SELECT actor FROM policy_history")[0][0] == "admin"
    assert again.latest_policy() == PolicyEvent(knobs=knobs, actor="admin")
    assert again.events_after(LogMark())[-1] == PolicyEvent(knobs=knobs, actor="admin")
    assert again.latest_snapshot() == (2, {"tasks": {}})
    assert again.get_request("nope") is None
    again.close()


def test_text_is_hashed_not_stored_by_default(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    store.record_decision(decision("r1"), request("r1"))
    store.record_outcome(outcome("r1"), task_type="classify")
    store.flush()
    row = store.query("SELECT r.prompt, o.response, o.response_sha256 FROM requests r "
                      "JOIN outcomes o USING (request_id)")[0]
    assert (row[0], row[1], row[2]) == (None, None, sha256("positive"))
    store.close()


def test_a_request_is_readable_before_its_rows_commit(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db", batch_interval_s=5.0, batch_rows=10_000)
    store.record_decision(decision("r1"), request("r1"))
    assert store.query("SELECT count(*) FROM decisions")[0][0] == 0  # still queued
    rec = store.get_request("r1")
    assert rec is not None and rec.decision == decision("r1")
    store.close()
    assert SQLiteStore(tmp_path / "c.db").query("SELECT count(*) FROM decisions")[0][0] == 1


def test_migrations_from_empty_and_from_an_older_schema(tmp_path: Path) -> None:
    fresh = SQLiteStore(tmp_path / "new.db")
    names = [r["name"] for r in fresh.query("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert names == ["0001_initial", "0002_pending_feedback", "0003_effective_reward",
                     "0004_policy_events", "0005_quality_targets", "0006_prompt_features",
                     "0007_shared_event_log", "0008_shared_limits",
                     "0009_limit_totals", "0010_calibration_pairs",
                     "0011_judge_scale"]
    fresh.close()

    old_path = tmp_path / "old.db"
    db = Database(old_path)
    build_migrations().apply(db, stop_before="0002_pending_feedback")
    db.execute("INSERT INTO posterior_snapshots (created_at, seq, state) VALUES (1, 5, '{}')")
    db.conn.commit()
    assert "pending_feedback" not in db.table_names()
    db.close()
    upgraded = SQLiteStore(old_path)
    assert upgraded.latest_snapshot() == (5, {})  # data kept
    assert upgraded.query("SELECT count(*) FROM pending_feedback")[0][0] == 0
    upgraded.close()


def test_a_newer_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
                 "VALUES ('conductor', '0099_from_the_future', 'now')")
    conn.commit()
    conn.close()
    with pytest.raises(SchemaVersionError, match=r"future\.db: written by a newer Conductor"):
        SQLiteStore(path)


def _three_thousand_decisions_in_one_file(path: Path) -> int:
    """A database of 3,000 decisions with its WAL folded in; returns the page size."""
    store = SQLiteStore(path)
    for i in range(3000):
        store.record_decision(decision(f"r{i}"), request(f"r{i}"))
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    conn.close()
    return page


def test_garbage_and_truncated_files_are_errors_naming_the_file(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(StorageError, match=r"garbage\.db: not a usable SQLite database"):
        SQLiteStore(garbage)

    path = tmp_path / "truncated.db"
    _three_thousand_decisions_in_one_file(path)
    size = path.stat().st_size
    with path.open("r+b") as fh:
        fh.truncate(size // 2)
    with pytest.raises(StorageError, match=r"truncated\.db: not a usable SQLite database"):
        SQLiteStore(path)


def test_damage_mid_file_is_refused_at_open_unless_the_operator_says_go(
        tmp_path: Path) -> None:
    """Pages overwritten in the middle of the file (where reading the last page of each
    table finds nothing): quick_check finds them; the CLI says so in one line."""
    from click.testing import CliRunner

    from conductor.cli import main

    path = tmp_path / "damaged.db"
    page = _three_thousand_decisions_in_one_file(path)
    size = path.stat().st_size
    with path.open("r+b") as fh:  # scribble over ten pages in the middle, keep the size
        fh.seek((size // page // 2) * page)
        fh.write(bytes(range(256)) * (10 * page // 256))
    assert path.stat().st_size == size
    with pytest.raises(StorageError, match=r"damaged\.db: the database is damaged"):
        SQLiteStore(path)
    result = CliRunner().invoke(main, ["serve", "--db", str(path), "--port", "1"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert "--skip-db-check" in result.output
    SQLiteStore(path, check=False).close()  # the operator's choice: it opens


@pytest.mark.slow
def test_eight_threads_writing_for_five_seconds_lose_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "c.db")
    counts = [0] * 8
    errors: list[BaseException] = []
    stop = time.monotonic() + 5.0

    def writer(k: int) -> None:
        try:
            i = 0
            while time.monotonic() < stop:
                rid = f"t{k}-{i}"
                store.record_decision(decision(rid), request(rid))
                store.record_outcome(outcome(rid), task_type="classify")
                source = "user" if i % 50 == 0 else "heuristic"  # some durable writes too
                store.record_reward(Reward(request_id=rid, source=source, score=0.5,
                                           task_type="classify", strategy="turbo-cheap"))
                i += 1
            counts[k] = i
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    store.close()
    assert errors == []
    total = sum(counts)
    print(f"8 threads wrote {total} requests (x4 rows) in 5 s")
    check = SQLiteStore(tmp_path / "c.db")
    for table in ("requests", "decisions", "outcomes", "rewards"):
        assert check.query(f"SELECT count(*) FROM {table}")[0][0] == total, table
    seqs = [r[0] for r in check.query("SELECT seq FROM outcomes UNION ALL SELECT seq FROM rewards")]
    assert len(set(seqs)) == len(seqs) == 2 * total  # one order for every posterior event
    check.close()


def test_restart_rebuilds_the_posterior_exactly(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    c = Conductor(seed=3, log_store=SQLiteStore(path))
    results = [c.complete("hello", task_type="chat") for _ in range(60)]
    c.snapshot()
    results += [c.complete("hi", task_type="classify") for _ in range(40)]
    for i, r in enumerate(results[::7]):
        c.feedback(r.request_id, stars=1 + i % 5, rater="ann")
    c.feedback(results[0].request_id, stars=1, rater="ann")  # a re-rating after the snapshot
    state = c.state()
    c.close()
    c2 = Conductor(seed=3, log_store=SQLiteStore(path))
    assert c2.state() == state
    # A re-rating after the restart still replaces, never adds.
    post = c2.posteriors["chat"]
    i = post.index[results[0].outcome.strategy]
    before = post.quality_trials()[i]
    c2.feedback(results[0].request_id, stars=5, rater="ann")
    assert post.quality_trials()[i] == pytest.approx(before)
    c2.close()


def test_corrupt_snapshots_lose_no_learning(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    c = Conductor(seed=3, log_store=SQLiteStore(path))
    for _ in range(10):
        c.complete("hello", task_type="chat")
    assert c.wait_for_judges()  # and the probes made on them
    learned = c.state()
    c.close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE posterior_snapshots SET state = '{\"tasks\": {\"chat\": "
                 "{\"strategies\": [\"turbo-cheap\"], \"evidence\": {\"q_s\": [NaN]}}'")
    conn.execute("INSERT INTO posterior_snapshots (created_at, seq, state) "
                 "VALUES (2e9, 99999, 'not json at all')")
    conn.commit()
    conn.close()
    c2 = Conductor(seed=3, log_store=SQLiteStore(path))
    # Every snapshot is unreadable: the posterior is rebuilt from all the events instead.
    assert c2.state() == learned
    r = c2.complete("hello", task_type="chat")
    assert r.outcome.error is None
    c2.close()


def test_an_in_memory_database_is_refused_with_what_to_use_instead() -> None:
    # The writer, each reader thread and the limit ledger connect on their own: ":memory:"
    # would give each an empty database of its own (reads failed with "no such table").
    with pytest.raises(StorageError, match=r"cannot be shared; give a file, or no database"):
        SQLiteStore(":memory:")
