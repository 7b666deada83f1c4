"""MetricsCollector against a known sequence of outcomes; alerts; the snapshot file."""

from __future__ import annotations

import logging
from pathlib import Path

import msgspec
import numpy as np
import pytest

from conductor.metrics import MetricsCollector
from conductor.types import Outcome


def _o(strategy: str, latency: float, cost: float, *, sla: bool = True,
       fallback: bool = False, error: str | None = None, tokens: tuple[int, int] = (100, 10)
       ) -> Outcome:
    return Outcome(request_id="r", strategy=strategy, model="m", latency_ms=latency,
                   cost_usd=cost, sla_met=sla, fallback_used=fallback, error=error,
                   input_tokens=tokens[0], output_tokens=tokens[1])


def test_stats_match_a_known_sequence() -> None:
    now = [1000.0]
    m = MetricsCollector(window_s=60, default_cost=lambda o: 0.01, clock=lambda: now[0])
    rng = np.random.default_rng(1)
    lat = rng.lognormal(np.log(500), 0.6, 1000)
    for i, x in enumerate(lat):
        s = "cheap" if i % 4 else "strong"
        m.record_outcome(task_type="classify" if i % 2 else "chat", client_id="acme",
                         outcome=_o(s, float(x), 0.001 if s == "cheap" else 0.005,
                                    sla=x < 1500, fallback=i % 50 == 0),
                         explored=i % 10 == 0)
    for score in (1.0, 0.0, 1.0):
        m.record_reward("classify", score)
    m.record_reward("classify", 0.5, previous=0.0)  # a correction replaces, never adds
    s = m.get_stats()
    c = s["counters"]
    assert c["outcomes_total"] == 1000 and c["fallbacks_total"] == 20
    assert c["explored_total"] == 100
    assert c["outcomes_sla_met"] == int((lat < 1500).sum())
    assert s["cost"]["total_usd"] == pytest.approx(750 * 0.001 + 250 * 0.005)
    assert s["cost"]["by_strategy"]["strong"] == pytest.approx(250 * 0.005)
    assert s["cost"]["saved_vs_default_usd"] == pytest.approx(1000 * 0.01 - 2.0)
    for p in (50, 95, 99):
        assert s["latency"][f"p{p}_ms"] == pytest.approx(np.percentile(lat, p), rel=0.02)
    assert s["latency"]["avg_ms"] == pytest.approx(lat.mean(), rel=0.01)
    assert s["strategies"] == {"cheap": 0.75, "strong": 0.25}
    assert s["strategies_by_task_type"]["chat"]["strong"] == 0.5
    assert s["fallback_rate"] == 0.02
    assert s["quality"]["by_task_type"]["classify"] == {"mean": 2.5 / 3, "rewards": 3}


def test_the_window_slides_and_since_start_keeps_everything() -> None:
    now = [0.0]
    m = MetricsCollector(window_s=60, interval_s=10, clock=lambda: now[0])
    for t in range(0, 120, 2):  # one request every 2 s for 2 minutes
        now[0] = float(t)
        m.record_outcome(task_type="chat", client_id="c", outcome=_o("a", 100.0, 0.001))
        m.record_reward("chat", 1.0 if t >= 60 else 0.0)
    s = m.get_stats()
    assert s["counters"]["outcomes_total"] == 60
    assert s["quality"]["by_task_type"]["chat"] == {"mean": 0.5, "rewards": 60}
    window_q = s["window"]["quality"]["by_task_type"]["chat"]
    assert window_q["mean"] > 0.8 and window_q["rewards"] == s["window"]["counters"][
        "outcomes_total"]
    assert 28 <= s["window"]["counters"]["outcomes_total"] <= 36  # about the last 60 s
    assert s["window"]["window_s"] == 60


@pytest.mark.parametrize(("fallbacks", "fires"), [(11, True), (9, False)])
def test_the_fallback_alert_fires_at_11_percent_not_9(fallbacks: int, fires: bool,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    m = MetricsCollector(window_s=300)
    for i in range(100):
        m.record_outcome(task_type="chat", client_id="c",
                         outcome=_o("a", 100.0, 0.001, fallback=i < fallbacks))
    with caplog.at_level(logging.WARNING, logger="conductor.metrics"):
        alerts = m.get_stats()["alerts"]
    assert any(a["name"] == "fallback_rate" for a in alerts) is fires
    assert ("alert fallback_rate" in caplog.text) is fires


def test_sla_judge_and_circuit_alerts() -> None:
    m = MetricsCollector(sla_target=0.95, circuit_alert_s=300)
    for i in range(50):
        m.record_outcome(task_type="chat", client_id="c", outcome=_o("a", 100.0, 0.0,
                                                                     sla=i % 10 != 0))
    m.set_judge(calls=10, dropped=2, failed=0, usd=0.01)
    m.set_circuits({"p/gpt-4o": 301.0, "p/gpt-4o-mini": 10.0})
    names = {a["name"] for a in m.get_stats()["alerts"]}
    assert names == {"sla_compliance", "judge_queue_drops", "circuit_open:p/gpt-4o"}


def test_a_snapshot_line_is_appended_every_interval(tmp_path: Path) -> None:
    now = [0.0]
    f = tmp_path / "metrics.jsonl"
    m = MetricsCollector(metrics_file=f, enable_logging=True, log_interval_s=10,
                         clock=lambda: now[0])
    for t in range(0, 35):
        now[0] = float(t)
        m.record_outcome(task_type="chat", client_id="c", outcome=_o("a", 100.0, 0.001))
    lines = [msgspec.json.decode(x) for x in f.read_bytes().splitlines()]
    assert [int(x["time"]) for x in lines] == [10, 20, 30]
    assert lines[-1]["counters"]["outcomes_total"] == 31


def test_the_series_is_one_point_per_busy_interval_with_exact_rates() -> None:
    now = [1000.0]
    m = MetricsCollector(interval_s=10, window_s=60, history_points=3,
                         default_cost=lambda o: 0.004, clock=lambda: now[0])

    def serve(n: int, strategy: str, at: float) -> None:
        now[0] = at
        for _ in range(n):
            m.record_outcome(task_type="chat", client_id="a", outcome=_o(strategy, 200.0,
                                                                          0.001))

    serve(20, "cheap", 1001.0)   # bucket 100
    serve(5, "strong", 1015.0)   # bucket 101
    m.record_reward("chat", 0.5)
    serve(10, "cheap", 1042.0)   # bucket 104; 102 and 103 were quiet
    now[0] = 1044.0              # 4 s into the bucket still filling
    points = m.series()
    assert [p["t"] for p in points] == [1000.0, 1010.0, 1040.0]
    assert [p["requests_per_s"] for p in points] == pytest.approx([2.0, 0.5, 10 / 4])
    assert points[0]["shares"] == {"cheap": 1.0} and points[1]["quality"] == {"chat": 0.5}
    assert points[1]["saved_fraction"] == pytest.approx(0.75)  # 0.001 vs 0.004
    assert points[0]["latency_ms"]["p50"] == pytest.approx(200.0, rel=0.01)
    serve(1, "cheap", 1055.0)
    serve(1, "cheap", 1065.0)
    assert [p["t"] for p in m.series()] == [1010.0, 1040.0, 1050.0, 1060.0]  # 3 kept + now
