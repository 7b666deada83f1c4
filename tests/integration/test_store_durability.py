"""Crash safety and graceful drain, with a real child process writing a real SQLite file."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conductor import Conductor
from conductor.storage.sqlite import SQLiteStore
from tests.integration.conftest import states_close, without_snapshots

CHILD = Path(__file__).with_name("child_writer.py")
ROOT = Path(__file__).resolve().parents[2]


def _start(db: Path, mode: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # stderr to a file: only stdout is a pipe, so reading it to its end cannot deadlock.
    with db.with_suffix(".stderr").open("w") as err:
        proc = subprocess.Popen([sys.executable, str(CHILD), str(db), mode],
                                stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "READY", _stderr(db)
    return proc


def _stderr(db: Path) -> str:
    return db.with_suffix(".stderr").read_text()


def _rest(proc: subprocess.Popen[str], timeout: float) -> list[list[str]]:
    """The lines the child still prints before it exits. Read through ``proc.stdout``, not
    ``communicate()``: communicate reads the raw pipe and drops what readline() already
    buffered (a line acknowledged by the child but never seen by the test)."""
    assert proc.stdout is not None
    with proc.stdout:
        rest = proc.stdout.read()
    proc.wait(timeout=timeout)
    return [ln.split() for ln in rest.splitlines()]


def _read_lines(proc: subprocess.Popen[str], prefix: str, n: int,
                timeout: float = 30.0) -> list[list[str]]:
    assert proc.stdout is not None
    out: list[list[str]] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(prefix):
            out.append(line.split())
    return out


@pytest.mark.slow
def test_sigkill_loses_no_acknowledged_feedback_and_rebuild_matches(tmp_path: Path) -> None:
    db = tmp_path / "crash.db"
    proc = _start(db, "feedback")
    acked = _read_lines(proc, "ACK", 400)
    os.kill(proc.pid, signal.SIGKILL)
    acked += [ln for ln in _rest(proc, 10) if ln[:1] == ["ACK"]]
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 400
    conn = sqlite3.connect(db)
    stored = set(conn.execute("SELECT request_id, rater FROM rewards WHERE source = 'user'"))
    snapshots = conn.execute("SELECT count(*) FROM posterior_snapshots").fetchone()[0]
    conn.close()
    missing = [(rid, rater) for _, rid, rater in acked if (rid, rater) not in stored]
    assert missing == []
    assert snapshots >= 1  # the child snapshotted mid-run, so the rebuild uses one

    # Restart: snapshot + later events ...
    restored = Conductor(seed=1, log_store=SQLiteStore(db))
    state = restored.state()
    restored.close()
    # ... equals a rebuild from every committed event with no snapshot at all.
    store = SQLiteStore(without_snapshots(db, tmp_path / "bare.db"))
    rebuilt = Conductor(seed=1, log_store=store)
    rebuilt_state = rebuilt.state()
    rebuilt.close()
    assert states_close(rebuilt_state, state)


@pytest.mark.slow
def test_sigterm_drains_every_answered_completion(tmp_path: Path) -> None:
    db = tmp_path / "drain.db"
    proc = _start(db, "complete")
    done = _read_lines(proc, "DONE", 300)
    proc.send_signal(signal.SIGTERM)
    rest = _rest(proc, 30)
    assert proc.returncode == 0, _stderr(db)
    done += [ln for ln in rest if ln[:1] == ["DONE"]]
    assert any(ln[:1] == ["CLOSED"] for ln in rest)
    conn = sqlite3.connect(db)
    served = " FROM decisions d JOIN outcomes o USING (request_id) WHERE d.routed_by"
    outcomes = {r[0] for r in conn.execute(f"SELECT request_id {served} != 'probe'")}
    decisions = conn.execute(
        "SELECT count(*) FROM decisions WHERE routed_by != 'probe'").fetchone()[0]
    # Probes made on those requests (the demo world's cheap strategies, early on): each
    # logged with its outcome.
    probes = conn.execute("SELECT count(*) FROM decisions WHERE routed_by = 'probe'"
                          ).fetchone()[0]
    probe_outcomes = conn.execute(f"SELECT count(*) {served} = 'probe'").fetchone()[0]
    conn.close()
    answered = {rid for _, rid in done}
    assert answered <= outcomes
    assert len(outcomes) == decisions == len(answered)
    assert probe_outcomes == probes
