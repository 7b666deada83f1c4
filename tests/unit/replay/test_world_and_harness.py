"""Outcome tables, adapters and the replay harness on a small synthetic world."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conductor.errors import InvalidRequestError
from conductor.replay.harness import ReplayConfig, frontier_aiq, run_replay, task_bars
from conductor.replay.world import World, build_world, read_rows


def test_outcome_table_unknown_quality_is_ineligible(world_file: Path) -> None:
    w = build_world(read_rows([world_file]))
    assert w.models == ["large", "medium", "small"]
    assert np.isnan(w.quality[5, 0]) and not np.isnan(w.quality[5, 1])
    assert w.cost[0, 2] == 0.001
    assert (w.latency_ms[~np.isnan(w.quality)] > 0).all()  # drawn from the profiles


def test_a_restricted_world_keeps_each_prompts_values_under_its_own_model() -> None:
    # Every array holds a distinct value per (prompt, model), so a row or a column taken
    # out of step shows. Prompt 1 was answered only by "c", which is left out.
    v = np.arange(12, dtype=float).reshape(4, 3)
    quality = v / 100
    quality[1, :2] = np.nan
    w = World(ids=["p0", "p1", "p2", "p3"], task_types=["x", "y", "x", "y"],
              models=["a", "b", "c"], quality=quality, cost=v + 100, latency_ms=v + 200,
              prompts=["w0", "w1", "w2", "w3"], output_tokens=v + 300)
    r = w.restricted(["b", "a", "b"])  # a name given twice counts once
    keep, cols = [0, 2, 3], [1, 0]
    assert r.models == ["b", "a"] and r.ids == ["p0", "p2", "p3"]
    assert r.task_types == ["x", "x", "y"] and r.prompts == ["w0", "w2", "w3"]
    for got, full in ((r.quality, quality), (r.cost, w.cost), (r.latency_ms, w.latency_ms),
                      (r.output_tokens, w.output_tokens)):
        assert np.array_equal(got, full[np.ix_(keep, cols)])
    back = w.take(np.array([3, 0]))  # rows only: every model, in the order asked
    assert back.ids == ["p3", "p0"] and back.models == w.models
    assert np.array_equal(back.latency_ms, w.latency_ms[[3, 0]])


def test_costs_come_from_prices_when_the_table_has_none(tmp_path: Path) -> None:
    p = tmp_path / "w.jsonl"
    p.write_text('{"id": "a", "task_type": "chat", "prompt": "hello", "input_tokens": 1000, '
                 '"outcomes": {"m": {"quality": 1.0, "output_tokens": 100}}}\n')
    w = build_world(read_rows([p]), prices={"m": (2.0, 10.0)})
    assert w.cost[0, 0] == pytest.approx((1000 * 2 + 100 * 10) / 1e6)
    with pytest.raises(InvalidRequestError, match="no cost_usd and no price"):
        build_world(read_rows([p]))


def test_routerbench_adapter(tmp_path: Path) -> None:
    csv = tmp_path / "rb.csv"
    csv.write_text(
        ",sample_id,prompt,eval_name,m1,m2,m1|model_response,m2|model_response,"
        "m1|total_cost,m2|total_cost,oracle_model_to_route_to\n"
        "0,arc.1,Q1,arc-challenge,1.0,0.0,A,B,0.001,0.01,m1\n"
        "1,mbpp.1,Q2,mbpp,0.0,,def f(),,0.002,0.02,m2\n")
    rows = read_rows([csv])
    assert [r.task_type for r in rows] == ["classify", "generate_long"]
    assert rows[1].outcomes["m2"].quality is None
    w = build_world(rows)
    assert w.quality[0].tolist() == [1.0, 0.0] and w.cost[1, 0] == 0.002


def test_bad_input_names_the_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.jsonl"
    p.write_text('{"id": "a", "task_type": "x", "outcomes": {}}\n{"id": 3}\n')
    with pytest.raises(InvalidRequestError, match=r"bad\.jsonl:2"):
        read_rows([p])
    with pytest.raises(InvalidRequestError, match="no such file"):
        read_rows([tmp_path / "missing.jsonl"])


def test_replay_report_orders_policies_sensibly(world_file: Path) -> None:
    w = build_world(read_rows([world_file]))
    report = run_replay(w, ReplayConfig(quality_bar=0.95, seeds=2, sweep=(0.8, 0.9, 1.0)))
    p = report["policies"]
    names = set(p)
    assert {"conductor", "conductor(t=0.25)", "conductor(t=1)", "always:small", "always:medium",
            "always:large", "random", "epsilon-greedy", "ucb1", "best-fixed-per-task",
            "oracle"} <= names
    for name, rec in p.items():
        for key in ("quality", "cost_usd", "quality_vs_strongest", "cost_vs_strongest",
                    "regret"):
            assert key in rec["overall"], (name, key)
        assert set(rec["by_task"]) == {"easy", "hard"}
    bars = task_bars(w, 0.95)
    assert bars["easy"] == pytest.approx(0.95 * np.nanmean(w.quality[w.task_index("easy")],
                                                           axis=0).max())
    assert p["oracle"]["overall"]["quality"] >= max(v["overall"]["quality"] for v in p.values())
    assert p["always:large"]["overall"]["cost_vs_strongest"] == pytest.approx(1.0, abs=0.01)
    # Hindsight: small is good enough on easy prompts, only large on hard ones.
    c = p["conductor"]["overall"]
    assert c["cost_vs_strongest"] < 0.6
    assert c["quality_vs_strongest"] > 0.9
    assert p["best-fixed-per-task"]["overall"]["regret"] == 0.0
    assert 0.0 < report["aiq"]["conductor"]["aiq"] <= 1.0


def test_frontier_aiq_on_known_points() -> None:
    # One point at the top of the range: the frontier is 0 left of it, so AIQ = 0.
    assert frontier_aiq([(10.0, 0.9)], 1.0, 10.0) == pytest.approx(0.0, abs=1e-3)
    # A point at the cheap end: flat at its quality across the range.
    assert frontier_aiq([(1.0, 0.8)], 1.0, 10.0) == pytest.approx(0.8, abs=1e-3)
    # A dominated point does not count.
    assert frontier_aiq([(1.0, 0.8), (5.0, 0.5)], 1.0, 10.0) == pytest.approx(0.8, abs=1e-3)
    # Two points: linear in log cost between them, flat after.
    both = frontier_aiq([(1.0, 0.6), (10.0, 1.0)], 1.0, 10.0)
    assert both == pytest.approx(0.8, abs=1e-3)
