"""MetricsCollector: counters, cost, latency percentiles, quality, SLA, fallbacks, alerts.

Numbers are kept since start and over a sliding window (ring of ``interval_s`` buckets).
Latency percentiles come from HdrHistogram (2 significant digits: within 1%), never
from sorting samples. The same collector feeds Prometheus (``prometheus-client``, on a
registry of its own) when one is given. With ``enable_logging`` a snapshot line is
appended to ``metrics_file`` every ``log_interval_s``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import msgspec
from hdrh.histogram import HdrHistogram

from conductor.types import CompletionRequest, Decision, Outcome

log = logging.getLogger("conductor.metrics")

_US_MAX = 3_600_000_000  # one hour, in microseconds


def _hist() -> HdrHistogram:
    return HdrHistogram(1, _US_MAX, 2)


def _percentiles(h: HdrHistogram) -> dict[str, float | None]:
    if h.get_total_count() == 0:
        return {"avg_ms": None, "p50_ms": None, "p95_ms": None, "p99_ms": None}
    return {"avg_ms": h.get_mean_value() / 1000.0,
            "p50_ms": h.get_value_at_percentile(50) / 1000.0,
            "p95_ms": h.get_value_at_percentile(95) / 1000.0,
            "p99_ms": h.get_value_at_percentile(99) / 1000.0}


class RouterListener(Protocol):
    """Told about what the router did (the service's metrics listen)."""

    def on_outcome(self, request: CompletionRequest, decision: Decision,
                   outcome: Outcome) -> None: ...

    def on_reward(self, task_type: str, new: float, old: float | None) -> None: ...

    def on_rate_limited(self, client_id: str, limit: str) -> None: ...


class RouterStats(msgspec.Struct, kw_only=True):
    """Counters since start, for ``/v1/stats`` and ``/metrics``."""

    retries: int
    fallbacks: int
    circuits_opened: int
    circuits_open: dict[str, float]
    judge_calls: int
    judge_failures: int
    judge_dropped: int
    judge_budget_skipped: int
    judge_cost_usd: float
    judge_self_graded: int
    judge_user_agreement: dict[str, dict[str, Any]]
    quality_scale: dict[str, dict[str, Any]] = {}
    # Probes (``conductor.probing.ProbeCounters``): queued, run, failed, skipped, cost_usd.
    probes: dict[str, float] = {}

    @classmethod
    def of(cls, health: Any, evaluation: Any, calibrations: Mapping[str, Any],
           scale: dict[str, dict[str, Any]] | None = None,
           probes: Any = None) -> RouterStats:
        """From the router's parts (``Health``, ``Evaluation``, judge calibrations, the
        scale each task type's quality is learned on: ``Learner.scale_report``, and the
        probes' counters)."""
        h, j = health, evaluation.counters
        return cls(
            retries=sum(h.retries.values()), fallbacks=h.fallbacks,
            circuits_opened=h.circuits_opened,
            circuits_open=health.circuits_open(), judge_calls=j.calls,
            judge_failures=j.failures, judge_dropped=evaluation.runner.dropped,
            judge_budget_skipped=evaluation.sampler.budget_skipped,
            judge_cost_usd=j.cost_usd, judge_self_graded=j.self_graded,
            judge_user_agreement={t: cal.agreement() for t, cal in calibrations.items()
                                  if cal.n}, quality_scale=scale or {},
            probes=msgspec.to_builtins(probes) if probes is not None else {})


class _Tally:
    """Everything counted over one stretch of time (a bucket, or since start)."""

    def __init__(self) -> None:
        self.counters = {"requests_total": 0, "outcomes_total": 0, "outcomes_sla_met": 0,
                         "fallbacks_total": 0, "errors_total": 0, "explored_total": 0,
                         "rate_limited_total": 0}
        self.cost_total = 0.0
        self.cost_default = 0.0
        self.cost_by_strategy: dict[str, float] = {}
        self.cost_by_task: dict[str, float] = {}
        self.by_strategy: dict[str, int] = {}
        self.by_task_strategy: dict[str, dict[str, int]] = {}
        self.latency = _hist()
        self.latency_by_strategy: dict[str, HdrHistogram] = {}
        self.quality: dict[str, list[float]] = {}  # task -> [sum, count]

    def add(self, other: _Tally) -> None:
        for k, v in other.counters.items():
            self.counters[k] += v
        self.cost_total += other.cost_total
        self.cost_default += other.cost_default
        for k, usd in other.cost_by_strategy.items():
            self.cost_by_strategy[k] = self.cost_by_strategy.get(k, 0.0) + usd
        for k, usd in other.cost_by_task.items():
            self.cost_by_task[k] = self.cost_by_task.get(k, 0.0) + usd
        for k, n in other.by_strategy.items():
            self.by_strategy[k] = self.by_strategy.get(k, 0) + n
        for t, m in other.by_task_strategy.items():
            mine = self.by_task_strategy.setdefault(t, {})
            for k, v in m.items():
                mine[k] = mine.get(k, 0) + v
        self.latency.add(other.latency)
        for k, h in other.latency_by_strategy.items():
            if k not in self.latency_by_strategy:
                self.latency_by_strategy[k] = _hist()
            self.latency_by_strategy[k].add(h)
        for t, (total, count) in other.quality.items():
            q = self.quality.setdefault(t, [0.0, 0.0])
            q[0] += total
            q[1] += count

    def view(self, window_s: float | None) -> dict[str, Any]:
        c = self.counters
        n = c["outcomes_total"]
        shares = {k: v / n for k, v in sorted(self.by_strategy.items())} if n else {}
        by_task = {t: {k: v / sum(m.values()) for k, v in sorted(m.items())}
                   for t, m in sorted(self.by_task_strategy.items())}
        return {
            "counters": dict(c),
            "cost": {"total_usd": self.cost_total,
                     "by_strategy": dict(sorted(self.cost_by_strategy.items())),
                     "by_task_type": dict(sorted(self.cost_by_task.items())),
                     "default_usd": self.cost_default,
                     "saved_vs_default_usd": self.cost_default - self.cost_total},
            "latency": {**_percentiles(self.latency),
                        "by_strategy": {k: _percentiles(h) for k, h in
                                        sorted(self.latency_by_strategy.items())}},
            "quality": {"by_task_type": {t: {"mean": s / k if k else None, "rewards": int(k)}
                                         for t, (s, k) in sorted(self.quality.items())}},
            "strategies": shares,
            "strategies_by_task_type": by_task,
            "fallback_rate": c["fallbacks_total"] / n if n else 0.0,
            "sla_compliance": c["outcomes_sla_met"] / n if n else None,
            "window_s": window_s,
        }


def _point(key: int, tally: _Tally, interval_s: float, seconds: float) -> dict[str, Any]:
    """One time-series point: what happened in one bucket of ``seconds`` (the last one is
    still filling)."""
    c = tally.counters
    n = c["outcomes_total"]
    lat = _percentiles(tally.latency)
    return {
        "t": key * interval_s,
        "requests_per_s": c["requests_total"] / max(seconds, 1e-9),
        "cost_usd": tally.cost_total,
        "default_usd": tally.cost_default,
        "saved_fraction": (1.0 - tally.cost_total / tally.cost_default
                           if tally.cost_default > 0 else None),
        "quality": {t: min(1.0, max(0.0, q / k)) for t, (q, k) in sorted(tally.quality.items())
                    if k},
        "latency_ms": {k: lat[f"{k}_ms"] for k in ("p50", "p95", "p99")},
        "shares": {k: v / n for k, v in sorted(tally.by_strategy.items())} if n else {},
        "fallback_rate": c["fallbacks_total"] / n if n else None,
        "errors": c["errors_total"],
    }


class MetricsCollector:
    """Thread-safe. Feed it outcomes, rewards and refusals; read ``get_stats()``."""

    def __init__(self, metrics_file: Path | None = None, enable_logging: bool = False, *,
                 window_s: float = 300.0, interval_s: float = 10.0,
                 log_interval_s: float = 60.0, fallback_alert_rate: float = 0.10,
                 sla_target: float = 0.95, circuit_alert_s: float = 300.0,
                 min_requests_for_alerts: int = 20,
                 default_cost: Callable[[Outcome], float] | None = None,
                 prometheus: Any | None = None, clock: Callable[[], float] = time.time,
                 history_points: int = 360) -> None:
        self.metrics_file = metrics_file
        self.enable_logging = enable_logging and metrics_file is not None
        self.window_s = window_s
        self.interval_s = interval_s
        self.log_interval_s = log_interval_s
        self.fallback_alert_rate = fallback_alert_rate
        self.sla_target = sla_target
        self.circuit_alert_s = circuit_alert_s
        self.min_requests_for_alerts = min_requests_for_alerts
        self.default_cost = default_cost
        self.prometheus = prometheus
        self.clock = clock
        self.started = clock()
        self.total = _Tally()
        self._buckets: deque[tuple[int, _Tally]] = deque()
        # Finished buckets as time-series points, oldest first (/v1/stats/series).
        self.history: deque[dict[str, Any]] = deque(maxlen=history_points)
        self._lock = threading.Lock()
        self._last_log = self.started
        self.judge: dict[str, float] = {"judge_calls_total": 0, "judge_dropped_total": 0,
                                        "judge_failed_total": 0, "judge_usd": 0.0}
        # Probes (conductor.probing): strategies run off the path to learn, never served;
        # not requests, but spend (the probed calls; their judge calls are in judge_usd).
        self.probes: dict[str, float] = {"probes_total": 0, "probes_usd": 0.0}
        self.agreement: dict[str, Any] = {}
        self.circuits_open: dict[str, float] = {}
        self._alerted: set[str] = set()

    def _bucket(self, now: float) -> _Tally:
        key = int(now // self.interval_s)
        if not self._buckets or self._buckets[-1][0] != key:
            if self._buckets:
                last, tally = self._buckets[-1]
                self.history.append(_point(last, tally, self.interval_s, self.interval_s))
            self._buckets.append((key, _Tally()))
        horizon = int((now - self.window_s) // self.interval_s)
        while self._buckets and self._buckets[0][0] < horizon:
            self._buckets.popleft()
        return self._buckets[-1][1]

    def record_outcome(self, *, task_type: str, client_id: str, outcome: Outcome,
                       explored: bool = False, overhead_ms: float | None = None) -> None:
        now = self.clock()
        default = self.default_cost(outcome) if self.default_cost else outcome.cost_usd
        with self._lock:
            for t in (self.total, self._bucket(now)):
                c = t.counters
                c["requests_total"] += 1
                c["outcomes_total"] += 1
                c["outcomes_sla_met"] += int(outcome.sla_met)
                c["fallbacks_total"] += int(outcome.fallback_used)
                c["errors_total"] += int(outcome.error is not None)
                c["explored_total"] += int(explored)
                t.cost_total += outcome.cost_usd
                t.cost_default += default
                s = outcome.strategy
                t.cost_by_strategy[s] = t.cost_by_strategy.get(s, 0.0) + outcome.cost_usd
                t.cost_by_task[task_type] = t.cost_by_task.get(task_type, 0.0) + outcome.cost_usd
                t.by_strategy[s] = t.by_strategy.get(s, 0) + 1
                m = t.by_task_strategy.setdefault(task_type, {})
                m[s] = m.get(s, 0) + 1
                us = int(min(max(outcome.latency_ms * 1000.0, 1), _US_MAX))
                t.latency.record_value(us)
                h = t.latency_by_strategy.get(s)
                if h is None:
                    h = t.latency_by_strategy[s] = _hist()
                h.record_value(us)
        if self.prometheus is not None:
            self.prometheus.outcome(client_id, task_type, outcome, explored, overhead_ms,
                                    default)
        self._maybe_log(now)

    def record_reward(self, task_type: str, score: float, previous: float | None = None) -> None:
        """A request's fused reward became ``score`` (it was ``previous``): quality is the
        mean of each request's current reward, so a correction replaces, never adds."""
        with self._lock:
            for t in (self.total, self._bucket(self.clock())):
                q = t.quality.setdefault(task_type, [0.0, 0.0])
                q[0] += score - (previous or 0.0)
                q[1] += 1 if previous is None else 0

    def record_rate_limited(self, client_id: str, limit: str) -> None:
        with self._lock:
            for t in (self.total, self._bucket(self.clock())):
                t.counters["rate_limited_total"] += 1
        if self.prometheus is not None:
            self.prometheus.rate_limited(client_id, limit)

    def set_judge(self, *, calls: float, dropped: float, failed: float, usd: float) -> None:
        self.judge = {"judge_calls_total": calls, "judge_dropped_total": dropped,
                      "judge_failed_total": failed, "judge_usd": usd}

    def set_probes(self, *, count: float, usd: float) -> None:
        self.probes = {"probes_total": count, "probes_usd": usd}

    def set_circuits(self, open_for_s: dict[str, float]) -> None:
        self.circuits_open = dict(open_for_s)

    def set_agreement(self, agreement: dict[str, Any]) -> None:
        self.agreement = agreement

    def _window(self, now: float) -> _Tally:
        t = _Tally()
        horizon = int((now - self.window_s) // self.interval_s)
        for key, b in self._buckets:
            if key >= horizon:
                t.add(b)
        return t

    def alerts(self, window: dict[str, Any]) -> list[dict[str, Any]]:
        """Active alerts over the window; each new one is logged once as a warning."""
        out: list[dict[str, Any]] = []
        n = window["counters"]["outcomes_total"]
        if n >= self.min_requests_for_alerts and window["fallback_rate"] > self.fallback_alert_rate:
            out.append({"name": "fallback_rate", "value": window["fallback_rate"],
                        "threshold": self.fallback_alert_rate,
                        "message": f"{window['fallback_rate']:.1%} of requests fell back in "
                                   f"the last {self.window_s:g} s"})
        sla = window["sla_compliance"]
        if n >= self.min_requests_for_alerts and sla is not None and sla < self.sla_target:
            out.append({"name": "sla_compliance", "value": sla, "threshold": self.sla_target,
                        "message": f"SLA met on {sla:.1%} of requests (target "
                                   f"{self.sla_target:.0%})"})
        if self.judge["judge_dropped_total"] > 0:
            out.append({"name": "judge_queue_drops", "value": self.judge["judge_dropped_total"],
                        "threshold": 0, "message": f"{self.judge['judge_dropped_total']:.0f} "
                                                   "judge jobs dropped: the queue was full"})
        for model, secs in sorted(self.circuits_open.items()):
            if secs > self.circuit_alert_s:
                out.append({"name": f"circuit_open:{model}", "value": secs,
                            "threshold": self.circuit_alert_s,
                            "message": f"circuit for {model} open for {secs:.0f} s"})
        names = {a["name"] for a in out}
        for a in out:
            if a["name"] not in self._alerted:
                log.warning("alert %s: %s", a["name"], a["message"],
                            extra={"alert": a["name"], "value": a["value"]})
        self._alerted = names
        if self.prometheus is not None:
            self.prometheus.alerts(names)
        return out

    def get_stats(self) -> dict[str, Any]:
        now = self.clock()
        with self._lock:
            since_start = self.total.view(None)
            window = self._window(now).view(self.window_s)
        for view in (since_start, window):
            view["counters"]["judge_calls_total"] = int(self.judge["judge_calls_total"])
            view["counters"]["judge_dropped_total"] = int(self.judge["judge_dropped_total"])
            view["cost"]["judge_usd"] = self.judge["judge_usd"]
            view["counters"]["probes_total"] = int(self.probes["probes_total"])
            view["cost"]["probes_usd"] = self.probes["probes_usd"]
            view["quality"]["judge_user_agreement"] = self.agreement
        return {**since_start, "uptime_s": now - self.started, "window": window,
                "alerts": self.alerts(window)}

    def series(self) -> list[dict[str, Any]]:
        """Time-series points, one per ``interval_s`` with traffic (quiet buckets are
        absent), the last one the bucket still filling (its rate over the part elapsed)."""
        now = self.clock()
        with self._lock:
            points = list(self.history)
            if self._buckets:
                key, tally = self._buckets[-1]
                elapsed = min(self.interval_s, max(now - key * self.interval_s, 1e-3))
                points.append(_point(key, tally, self.interval_s, elapsed))
        return points

    def _maybe_log(self, now: float) -> None:
        if not self.enable_logging or now - self._last_log < self.log_interval_s:
            return
        self._last_log = now
        self.write_snapshot()

    @classmethod
    def from_records(cls, records: Any, default_cost: Callable[[Outcome], float] | None = None,
                     window_s: float = 300.0) -> MetricsCollector:
        """A collector fed with stored requests (``SQLiteStore.iter_requests``), on their own
        clock: "since start" covers the whole log, the window its last ``window_s``.
        Probes are counted apart, with the cost of their calls (their judge's calls are in
        the judge's table)."""
        now = [0.0]
        m = cls(window_s=window_s, default_cost=default_cost, clock=lambda: now[0])
        first = True
        probes, probes_usd = 0, 0.0
        for rec in records:
            outcome = rec["outcome"]
            if outcome is None:
                continue
            if rec["decision"].routed_by == "probe":
                probes += 1
                probes_usd += outcome.cost_usd
                continue
            now[0] = max(now[0], outcome.created_at)
            if first:
                m.started = now[0]
                first = False
            m.record_outcome(task_type=rec["task_type"], client_id=rec["client_id"],
                             outcome=outcome, explored=rec["decision"].explored)
            effective = [r.effective_score for r in rec["rewards"]
                         if r.effective_score is not None]
            if effective:
                m.record_reward(rec["task_type"], effective[-1])
        m.set_probes(count=probes, usd=probes_usd)
        return m

    def write_snapshot(self) -> None:
        """Append one JSON line of ``get_stats()`` (with a timestamp) to the metrics file."""
        if self.metrics_file is None:
            return
        line = msgspec.json.encode({"time": self.clock(), **self.get_stats()})
        with self.metrics_file.open("ab") as fh:
            fh.write(line + b"\n")
