"""/metrics parses as Prometheus text; the dashboard renders in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conductor.config import MonitoringConfig
from conductor.service.app import create_app
from conductor.testing import FakeUpstream
from tests.integration.conftest import ServedApp, fake_settings

ROOT = Path(__file__).resolve().parents[2]


def _traffic(url: str, n: int = 30) -> None:
    with httpx.Client(base_url=url, timeout=10) as h:
        for i in range(n):
            r = h.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": f"hi {i}"}],
                "conductor": {"task_type": ("classify", "chat", "summarize")[i % 3]}})
            assert r.status_code == 200
            h.post("/v1/feedback", json={"request_id": r.headers["x-conductor-request-id"],
                                         "stars": 1 + i % 5})


def test_metrics_endpoint_is_valid_prometheus_text(upstream: FakeUpstream,
                                                   tmp_path: Path) -> None:
    app = create_app(fake_settings(upstream.base_url), db_path=tmp_path / "m.db")
    with ServedApp(app) as s:
        _traffic(s.url)
        with httpx.Client(base_url=s.url, timeout=10) as h:  # one more, rated 5 stars
            r = h.post("/v1/chat/completions", json={
                "messages": [{"role": "user", "content": "hi"}],
                "conductor": {"task_type": "chat"}})
            h.post("/v1/feedback", json={"request_id": r.headers["x-conductor-request-id"],
                                         "stars": 5})
        text = httpx.get(s.url + "/metrics").text
        stats = httpx.get(s.url + "/v1/stats").json()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name in ("conductor_requests", "conductor_outcomes", "conductor_fallbacks",
                 "conductor_cost_usd", "conductor_latency_seconds",
                 "conductor_gateway_overhead_seconds", "conductor_posterior_quality_mean",
                 "conductor_posterior_quality_std", "conductor_judge_calls",
                 "conductor_rate_limited"):
        assert name in families, name
    requests = sum(smp.value for smp in families["conductor_requests"].samples
                   if smp.name == "conductor_requests_total")
    assert requests == 31 == stats["counters"]["requests_total"]
    labels = {k for f in families.values() for smp in f.samples for k in smp.labels}
    assert labels <= {"client", "task_type", "strategy", "sla_met", "limit", "alert", "le",
                      "model", "reason", "kind"}  # all bounded by the config (reason: error
    # classes, kind: the judge's two error rates)
    # No judge here, so no user labels calibrate one: quality is learned as scored, and
    # the served quality on that scale is the /v1/stats figure.
    calibrated = {smp.labels["task_type"]: smp.value
                  for smp in families["conductor_quality_calibrated"].samples}
    assert calibrated["chat"] == 0.0 and set(calibrated.values()) == {0.0}
    served = {smp.labels["task_type"]: smp.value
              for smp in families["conductor_quality_served"].samples}
    learned = stats["quality"]["learned"]["chat"]
    assert learned["scale"] == "judge" and learned["judge_false_positive"] is None
    assert served["chat"] == pytest.approx(learned["served_quality"]) == pytest.approx(
        6 / 11, abs=0.02)  # ten ratings of mean 0.5 and one of 1 (decayed a little)
    assert "conductor_judge_error_rate" not in {smp.name for f in families.values()
                                                for smp in f.samples}
    states = {smp.labels["model"]: smp.value
              for smp in families["conductor_circuit_state"].samples}
    assert states == {"cheap": 0.0, "strong": 0.0}  # both closed
    assert not re.search(r"[0-9a-f]{32}", text)  # no request ids anywhere
    assert stats["quality"]["by_task_type"]["chat"]["rewards"] == 11
    assert stats["cost"]["saved_vs_default_usd"] > 0


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _browser() -> str:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    return browser


def _offline_flags(tmp_path: Path) -> list[str]:
    """Headless, and every host but 127.0.0.1 unresolvable: the pages must work offline."""
    return ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--virtual-time-budget=8000", "--window-size=1400,2300"]


def _traffic_over_intervals(url: str, rounds: int = 4, per_round: int = 9) -> None:
    """Traffic in rounds a little longer apart than the series' interval (0.5 s here), so
    the series has several points; the sleep only spaces them, nothing is timed."""
    for _ in range(rounds):
        _traffic(url, per_round)
        time.sleep(0.6)


def _monitored_app(upstream: FakeUpstream, db: Path) -> Any:
    settings = fake_settings(upstream.base_url, task_types={"chat": {"quality_target": 0.8}})
    return create_app(msgspec.structs.replace(
        settings, monitoring=MonitoringConfig(interval_s=0.5)), db_path=db)


def test_the_series_endpoint_moves_over_time_and_adds_up(upstream: FakeUpstream,
                                                         tmp_path: Path) -> None:
    with ServedApp(_monitored_app(upstream, tmp_path / "s.db")) as s:
        _traffic_over_intervals(s.url)
        series = httpx.get(s.url + "/v1/stats/series").json()
        stats = httpx.get(s.url + "/v1/stats").json()
    points = series["points"]
    assert series["interval_s"] == 0.5 and len(points) >= 4
    assert [p["t"] for p in points] == sorted({p["t"] for p in points})  # one per interval
    # Whole intervals: their rate times 0.5 s is a whole number of requests (the exact
    # rates are in tests/unit/test_metrics.py); feedback-only intervals have no rate.
    whole = [p["requests_per_s"] * 0.5 for p in points[:-1]]
    assert all(abs(n - round(n)) < 1e-9 for n in whole) and sum(whole) <= 36
    assert sum(p["cost_usd"] for p in points) == pytest.approx(stats["cost"]["total_usd"])
    assert sum(p["default_usd"] for p in points) == pytest.approx(stats["cost"]["default_usd"])
    assert all(abs(sum(p["shares"].values()) - 1) < 1e-9 for p in points if p["shares"])
    assert series["targets"]["chat"] == 0.8 and series["targets"]["classify"] is None
    cheap = series["posterior"]["chat"]["direct-cheap"]
    assert 0 <= cheap["low"] <= cheap["mean"] <= cheap["high"] <= 1 and cheap["rewards"] > 0


@pytest.mark.slow
def test_dashboard_draws_numbers_axes_and_captions_offline(upstream: FakeUpstream,
                                                           tmp_path: Path) -> None:
    browser = _browser()
    flags = _offline_flags(tmp_path)
    with ServedApp(_monitored_app(upstream, tmp_path / "d.db")) as s:
        _traffic_over_intervals(s.url)
        dom = subprocess.run([browser, *flags, "--dump-dom", s.url + "/dashboard"],
                             capture_output=True, text=True, timeout=120).stdout
        alerts = httpx.get(s.url + "/v1/stats").json()["alerts"]
        shot = ROOT / ".ci" / "artifacts" / "dashboard.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([browser, *flags, f"--screenshot={shot}", s.url + "/dashboard"],
                       capture_output=True, timeout=120)
    assert 'data-ready="1"' in dom, dom[:2000]
    assert 'data-errors="0"' in dom
    units = {"c-rate": "requests/s", "c-cost": "USD per interval", "c-quality": "quality (0-1)",
             "c-latency": "ms", "c-shares": "% of requests", "c-fallback": "% of requests",
             "c-posterior": "posterior quality (0-1)"}
    for chart, unit in units.items():
        tag = re.search(rf'<canvas id="{chart}"[^>]*>', dom)
        assert tag, chart
        attrs = dict(re.findall(r'data-(\w+)="([^"]*)"', tag.group(0)))
        assert attrs["ytitle"] == unit, (chart, attrs)
        yticks = attrs["yticks"].split("|")
        assert len(yticks) >= 3 and all(re.fullmatch(r"-?[\d.,]+", t) for t in yticks), attrs
        if chart == "c-posterior":
            assert "direct-cheap" in attrs["xticks"] and "rewards" in attrs["xticks"]
            assert int(attrs["points"]) == 8  # an interval and a mean per strategy
        else:  # a time axis with several distinct times, and a series that moves
            times = attrs["xticks"].split("|")
            assert attrs["xtitle"] == "time (local)" and len(set(times)) >= 2, attrs
            assert all(re.search(r"\d{1,2}:\d{2}:\d{2}", t) for t in times), times
            assert int(attrs["points"]) >= 4, (chart, attrs)
    assert "y2ticks" in dom and 'data-y2title="saved (%)"' in dom
    assert dom.count("<figcaption>") == dom.count("<figure>") == 9  # a caption on each panel
    if alerts:  # the page lists exactly what /v1/stats reports
        shown = re.findall(r'<li class="alert">([^<\x27"+]+)</li>', dom)  # not the script
        assert shown == [a["message"] for a in alerts]
    else:
        assert "no active alerts" in dom
    assert 'id="requests">36<' in dom
    assert shot.stat().st_size > 50_000


@pytest.mark.slow
def test_schema_page_renders_offline(upstream: FakeUpstream, tmp_path: Path) -> None:
    browser = _browser()
    app = create_app(fake_settings(upstream.base_url), db_path=tmp_path / "o.db")
    with ServedApp(app) as s:
        page = httpx.get(s.url + "/schema").text
        dom = subprocess.run([browser, *_offline_flags(tmp_path), "--dump-dom",
                              s.url + "/schema"], capture_output=True, text=True,
                             timeout=120).stdout
        assert httpx.get(s.url + "/assets/nope.js").status_code == 404
    assert not re.search(r"(src|href)=[\"\x27]https?://", page)  # nothing from the internet
    paths = set(re.findall(r'data-path="([^"]+)"', dom))
    assert {"/v1/chat/completions", "/v1/feedback", "/v1/policy", "/metrics"} <= paths, dom[:3000]


def test_grafana_dashboard_queries_metrics_that_exist(upstream: FakeUpstream,
                                                      tmp_path: Path) -> None:
    """conductor/data/grafana-dashboard.json: the structure Grafana imports, and every
    metric and label its queries use is in a live /metrics."""
    board = json.loads((ROOT / "conductor/data/grafana-dashboard.json").read_text())
    app = create_app(fake_settings(upstream.base_url), db_path=tmp_path / "g.db")
    with ServedApp(app) as s:
        _traffic(s.url)
        text = httpx.get(s.url + "/metrics").text
    samples: dict[str, set[str]] = {}  # exposed series name -> labels seen on it
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    for family in text_string_to_metric_families(text):
        for suffix in suffixes.get(family.type, ("",)):  # also families with no child yet
            samples.setdefault(family.name + suffix, set())
        for smp in family.samples:
            samples.setdefault(smp.name, set()).update(smp.labels)
    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    (var,) = board["templating"]["list"]
    assert var["type"] == "datasource" and var["query"] == "prometheus"
    ids, cells = set(), set()
    for p in board["panels"]:
        assert p["id"] not in ids and p["title"] and p["description"], p["title"]
        ids.add(p["id"])
        assert p["datasource"]["uid"] == "${" + var["name"] + "}"
        assert p["fieldConfig"]["defaults"]["unit"], p["title"]
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        mine = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not mine & cells, f"{p['title']} overlaps another panel"
        cells |= mine
        refs = [t["refId"] for t in p["targets"]]
        assert refs and len(refs) == len(set(refs))
        for t in p["targets"]:
            expr = t["expr"]
            assert expr.count("(") == expr.count(")") and expr.count("[") == expr.count("]")
            names = re.findall(r"conductor_[a-z_]+", expr)
            assert names, expr
            for name in names:
                assert name in samples, (p["title"], name)
            for group in re.findall(r"by \(([^)]*)\)", expr):
                for label in (x.strip() for x in group.split(",")):
                    seen = [samples[n] for n in names if samples[n]]  # series with children
                    assert label == "le" or not seen or any(label in x for x in seen), (
                        p["title"], label)
