"""Probes through the real service: a cheap strategy still being measured is run on the
request off the path and judged, never served, until its quality rests on enough rewards.

The fake OpenAI-compatible upstream answers for both models and for the judge (the strong
model, which grades right answers 10 and wrong ones 1). The cheap model is right 84% of
the time, the strong one 86%; the target is 0.95 of the strong one's quality, so the cheap
model alone meets it once it is known."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from click.testing import CliRunner

from conductor import Conductor
from conductor.cli import main as cli_main
from conductor.config import settings_from_dict
from conductor.replay.logs import records_from_store
from conductor.replay.offline import Candidate, compare
from conductor.service.app import create_app
from conductor.storage.sqlite import SQLiteStore
from conductor.testing import FakeUpstream
from tests.integration.conftest import ServedApp, judged_chat_settings

RIGHT = {"strong": 0.86, "cheap": 0.84}
PROBE_TRIALS = 30
# Enough for the cheap model to be wanted PROBE_TRIALS times and then served: over ten
# runs it was first served at request 41-113 (the judge's workers make runs differ).
REQUESTS = 240


def _settings(base_url: str, **policy: Any) -> Any:
    return judged_chat_settings(base_url, half_life=None, target_decay=False,
                                probe_trials=PROBE_TRIALS, **policy)


class _World:
    """Right or wrong per answer (drawn per call), and a judge that is always right."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()
        self.calls = {"cheap": 0, "strong": 0, "judge": 0}

    def answer(self, body: dict[str, Any]) -> str:
        with self.lock:
            if "strict grader" in body["messages"][0]["content"]:
                self.calls["judge"] += 1
                right = "verdict=right" in body["messages"][-1]["content"]
                return "Score: 10" if right else "Score: 1"
            self.calls[body["model"]] += 1
            right = float(self.rng.random()) < RIGHT[body["model"]]
        return f"verdict={'right' if right else 'wrong'}"


def test_a_thin_cheap_strategy_is_probed_not_served_and_learned_apart_from_the_target(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    world = _World(3)
    upstream.behaviour.answer = world.answer
    path = tmp_path / "c.db"
    settings = _settings(upstream.base_url)
    traces, texts = [], []
    with ServedApp(create_app(settings, db_path=path)) as served, httpx.Client(
            base_url=served.url, timeout=30) as client:
        for i in range(REQUESTS):
            r = client.post("/v1/chat/completions", json={
                "model": "auto", "messages": [{"role": "user", "content": f"q {i}"}],
                "conductor": {"task_type": "chat"}})
            assert r.status_code == 200, r.text
            traces.append(r.json()["conductor"])
            texts.append(r.json()["choices"][0]["message"]["content"])
        for t, text in list(zip(traces, texts, strict=True))[:40]:  # user labels: enough
            # pairs to read the judge on the users' scale
            r = client.post("/v1/feedback", json={
                "request_id": t["request_id"], "thumbs": "verdict=right" in text})
            assert r.status_code == 200, r.text
        probes_made = sum(t["probe"] is not None for t in traces)
        deadline = time.monotonic() + 60  # not an assertion: a bound on waiting
        while True:  # probes run on the judge's workers after the answers: let them land
            stats = client.get("/v1/stats").json()
            if stats["counters"]["probes_total"] >= probes_made or time.monotonic() > deadline:
                break
            time.sleep(0.05)
    probed = [t for t in traces if t["probe"] is not None]
    served_cheap = [i for i, t in enumerate(traces) if t["strategy"] == "direct-cheap"]
    print("probes", len(probed), "cheap served first at", served_cheap[:1],
          "probes before it", sum(t["probe"] is not None for t in traces[:served_cheap[0]])
          if served_cheap else None)
    # Probes named the cheap strategy, and the strong one answered those requests. The
    # cheap one is thin while its posterior (prior weight 2) weighs under PROBE_TRIALS.
    assert len(probed) >= PROBE_TRIALS - 2
    assert {t["probe"] for t in probed} == {"direct-cheap"}
    assert all(t["strategy"] == "direct-strong" for t in probed)
    # Served only once probes could have measured it: at least PROBE_TRIALS probes first.
    assert served_cheap, "the cheap strategy meets the target: it should serve in the end"
    assert sum(t["probe"] is not None for t in traces[:served_cheap[0]]) >= PROBE_TRIALS - 2
    # Every probe ran against the upstream and was judged, in addition to the answers.
    assert world.calls["cheap"] == len(probed) + len(served_cheap)
    assert world.calls["judge"] == REQUESTS + len(probed)  # every answer is judged (rate 1)
    assert stats["counters"]["probes_total"] == len(probed)
    assert stats["cost"]["probes_usd"] > 0.0
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT d.request_id, d.strategy, d.propensity, o.cost_usd, r.source,"
                          " r.applied FROM decisions d JOIN outcomes o USING (request_id)"
                          " JOIN rewards r USING (request_id) WHERE d.routed_by = 'probe'"
                          " AND r.source = 'judge'").fetchall()
    assert sorted(r[0] for r in rows) == sorted(f"{t['request_id']}.probe" for t in probed)
    assert all(r[1] == "direct-cheap" and r[2] == 1.0 and r[3] > 0 and r[5] == 1
               for r in rows)

    # The learner: probes taught the cheap strategy's quality, but the target's window
    # holds the answers served, and only those; a restart rebuilds it exactly.
    with Conductor(settings, log_store=SQLiteStore(path)) as again:
        post = again.learner.posteriors["chat"]
        target = again.learner.targets["chat"]
        cheap = post.index["direct-cheap"]
        # Every answer of it once, judged or labelled (no decay here; the labels calibrate
        # the judge, so quality_trials weighs judged ones less).
        ev = post.evidence
        answers = ev["j_n"][cheap] + ev["q_s"][cheap] + ev["q_f"][cheap]
        assert answers == pytest.approx(len(probed) + len(served_cheap))
        assert target.count == pytest.approx(REQUESTS)
        rebuilt = again.learner.state()
        # What compare evaluates is what was served: probes are not decisions.
        records = records_from_store(again.log_store.iter_requests())
        assert sum(r.routed_by == "probe" for r in records) == len(probed)
        res = compare(records, settings, [Candidate(spec="strategy=direct-strong",
                                                    strategy="direct-strong")], resamples=10)
        assert res["logged"]["used_records"] == REQUESTS
    # `conductor stats` on the log: the requests served, and the probes apart.
    ran = CliRunner().invoke(cli_main, ["stats", "--db", str(path), "--json"])
    assert ran.exit_code == 0, ran.output
    report = msgspec.json.decode(ran.output)
    counters = report["counters"]
    # The users' scale is of the traffic served too (the probes' rewards are not in it).
    assert report["quality"]["users_scale"]["chat"]["requests"] == REQUESTS
    assert (counters["outcomes_total"], counters["probes_total"]) == (REQUESTS, len(probed))
    text = CliRunner().invoke(cli_main, ["stats", "--db", str(path)]).output
    assert f"requests {REQUESTS} " in text and f"probes {len(probed)} " in text
    # Rebuilt from the log's events alone (no snapshot): the same posterior and target.
    with sqlite3.connect(path) as db:
        db.execute("DELETE FROM posterior_snapshots")
    with Conductor(settings, log_store=SQLiteStore(path)) as third:
        state = third.learner.state()
    for name, ev in rebuilt["tasks"]["chat"]["evidence"].items():
        np.testing.assert_allclose(state["tasks"]["chat"]["evidence"][name], ev, atol=1e-9)
    for key in ("count", "reward_sum"):
        assert state["targets"]["chat"][key] == pytest.approx(rebuilt["targets"]["chat"][key])


def test_without_a_judge_nothing_is_probed(upstream: FakeUpstream) -> None:
    """A probe learns only through the judge: with none configured the policy explores by
    serving, as before."""
    world = _World(4)
    upstream.behaviour.answer = world.answer
    data = msgspec.to_builtins(_settings(upstream.base_url))
    data.pop("judge")
    with Conductor(settings_from_dict(data), seed=1) as c:
        decisions = [c.complete(f"q {i}", task_type="chat").decision for i in range(60)]
        assert c.wait_for_learning(30)
        assert c.stats().probes["queued"] == 0
    assert all(d.probe is None for d in decisions)
    assert world.calls["judge"] == 0
