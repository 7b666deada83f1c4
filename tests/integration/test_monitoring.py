"""/metrics parses as Prometheus text; the dashboard renders in a real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

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
    assert requests == 30 == stats["counters"]["requests_total"]
    labels = {k for f in families.values() for smp in f.samples for k in smp.labels}
    assert labels <= {"client", "task_type", "strategy", "sla_met", "limit", "alert", "le"}
    assert not re.search(r"[0-9a-f]{32}", text)  # no request ids anywhere
    assert stats["quality"]["by_task_type"]["chat"]["rewards"] == 10
    assert stats["cost"]["saved_vs_default_usd"] > 0


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


@pytest.mark.slow
def test_dashboard_renders_with_data_in_headless_chromium(upstream: FakeUpstream,
                                                          tmp_path: Path) -> None:
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("CI must have Chromium (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium on this machine (apt-get install chromium)")
    app = create_app(fake_settings(upstream.base_url), db_path=tmp_path / "d.db")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
             "--virtual-time-budget=8000", "--window-size=1400,1100"]
    with ServedApp(app) as s:
        _traffic(s.url)
        dom = subprocess.run([browser, *flags, "--dump-dom", s.url + "/dashboard"],
                             capture_output=True, text=True, timeout=120).stdout
        alerts = httpx.get(s.url + "/v1/stats").json()["alerts"]
        shot = ROOT / ".ci" / "artifacts" / "dashboard.png"
        shot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([browser, *flags, f"--screenshot={shot}", s.url + "/dashboard"],
                       capture_output=True, timeout=120)
    assert 'data-ready="1"' in dom, dom[:2000]
    assert 'data-errors="0"' in dom
    for chart in ("c-requests", "c-cost", "c-share", "c-quality", "c-latency"):
        m = re.search(rf'id="{chart}"[^>]*data-points="(\d+)"', dom)
        assert m and int(m.group(1)) > 0, chart
    if alerts:  # the page lists exactly what /v1/stats reports
        shown = re.findall(r'<li class="alert">([^<\x27"+]+)</li>', dom)  # not the script
        assert shown == [a["message"] for a in alerts]
    else:
        assert "no active alerts" in dom
    assert 'id="requests">30<' in dom
    assert shot.stat().st_size > 20_000
