"""JSONL log store: append-only records, rotation, torn last lines."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from conductor import Conductor
from conductor.errors import StorageError
from conductor.storage.jsonl import JSONLLogStore, log_files, read_log


def test_conductor_logs_every_decision_outcome_and_reward(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with Conductor(seed=2, log_store=JSONLLogStore(path)) as c:
        results = [c.complete("hi", task_type="classify") for _ in range(25)]
        c.feedback(results[3].request_id, stars=4, rater="ann")
    records = list(read_log(path))
    kinds = [r["type"] for r in records]
    decisions = [r["decision"] for r in records if r["type"] == "decision"]
    # The probes made on them too (the cheap strategies, early on): logged the same way.
    probes = [d for d in decisions if d["routed_by"] == "probe"]
    assert probes and {d["request_id"] for d in probes} <= {
        f"{r.request_id}.probe" for r in results}
    assert len(decisions) - len(probes) == 25 and kinds.count("outcome") == len(decisions)
    sources = [r["reward"]["source"] for r in records if r["type"] == "reward"]
    assert sources.count("heuristic") == sources.count("simulated") == len(decisions)
    assert sources.count("user") == 1
    first = records[0]["decision"]
    assert first["request_id"] == results[0].request_id
    assert first["propensity"] == results[0].decision.propensity
    assert first["constraints"]["max_latency_ms"] == 3000  # the task type's default
    assert 0.8 < first["quality_target"] <= 1.0  # 95% of turbo-quality, cautiously
    user = [r for r in records if r["type"] == "reward" and r["reward"]["source"] == "user"]
    assert user[0]["reward"]["score"] == 0.75 and user[0]["reward"]["rater"] == "ann"


def test_rotation_keeps_every_record_in_order(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    with Conductor(seed=2, log_store=JSONLLogStore(path, max_bytes=20_000, backups=50)) as c:
        ids = [c.complete("hi", task_type="chat").request_id for _ in range(60)]
    assert len(log_files(path)) > 3
    decisions = [r["decision"]["request_id"] for r in read_log(path)
                 if r["type"] == "decision" and r["decision"]["routed_by"] != "probe"]
    assert decisions == ids
    assert all(f.stat().st_size <= 20_000 for f in log_files(path))


def test_a_torn_last_line_is_skipped_with_a_warning(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "log.jsonl"
    with Conductor(seed=2, log_store=JSONLLogStore(path)) as c:
        for _ in range(3):
            c.complete("hi", task_type="chat")
    complete = len(list(read_log(path)))
    with path.open("ab") as fh:
        fh.write(b'{"type": "decision", "decision": {"request_id": "cut-of')
    with caplog.at_level(logging.WARNING, logger="conductor.storage"):
        records = list(read_log(path))
    assert len(records) == complete >= 9
    assert "skipping torn last line" in caplog.text


def test_garbage_in_the_middle_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes(b'{"type": "reward"}\nnot json\n{"type": "reward"}\n')
    with pytest.raises(StorageError, match=r"log\.jsonl:2: not valid JSON"):
        list(read_log(path))
    with pytest.raises(StorageError, match="no such log file"):
        list(read_log(tmp_path / "missing.jsonl"))
