"""Prometheus exposition (prometheus-client) on a registry of the app's own.

Label values come only from the configuration (clients, task types, strategies); any
other value is reported as "other", so cardinality stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from conductor.router import Conductor
from conductor.types import Outcome

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64)
OVERHEAD_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1)


class PrometheusMetrics:
    def __init__(self, conductor: Conductor) -> None:
        s = conductor.settings
        self.conductor = conductor
        self.clients = set(s.clients) | {"default"}
        self.tasks = set(s.task_types)
        self.strategies = set(s.strategies)
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("conductor_requests", "Routed requests",
                                ["client", "task_type", "strategy"], registry=r)
        self.outcomes = Counter("conductor_outcomes", "Completed requests by SLA result",
                                ["task_type", "strategy", "sla_met"], registry=r)
        self.fallbacks = Counter("conductor_fallbacks", "Requests that fell back",
                                 ["task_type", "strategy"], registry=r)
        self.errors = Counter("conductor_errors", "Requests that failed on every strategy",
                              ["task_type"], registry=r)
        self.explored = Counter("conductor_explored", "Decisions that explored",
                                ["task_type"], registry=r)
        self.cost = Counter("conductor_cost_usd", "Spend on answers (USD)",
                            ["task_type", "strategy"], registry=r)
        self.judge_calls = Gauge("conductor_judge_calls", "Judge calls since start", registry=r)
        self.judge_failures = Gauge("conductor_judge_failures", "Judge failures since start",
                                    registry=r)
        self.judge_dropped = Gauge("conductor_judge_dropped", "Judge jobs dropped (queue full)",
                                   registry=r)
        self.judge_cost = Gauge("conductor_judge_cost_usd", "Spend on the judge (USD)",
                                registry=r)
        self.rate_limited_c = Counter("conductor_rate_limited", "Refused by a client limit",
                                      ["client", "limit"], registry=r)
        self.latency = Histogram("conductor_latency_seconds", "End-to-end latency",
                                 ["task_type", "strategy"], buckets=LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("conductor_gateway_overhead_seconds",
                                  "Time spent in Conductor outside upstream calls",
                                  buckets=OVERHEAD_BUCKETS, registry=r)
        self.q_mean = Gauge("conductor_posterior_quality_mean", "Posterior mean quality",
                            ["task_type", "strategy"], registry=r)
        self.q_std = Gauge("conductor_posterior_quality_std", "Posterior std of quality",
                           ["task_type", "strategy"], registry=r)
        self.alert = Gauge("conductor_alert", "1 while an alert is active", ["alert"],
                           registry=r)
        self.default_cost = Counter(
            "conductor_default_cost_usd", "What the same answers would have cost on the "
            "default strategy (USD): saving = this - conductor_cost_usd", ["task_type"],
            registry=r)
        self.circuit = Gauge("conductor_circuit_state", "A model's circuit: 0 closed, "
                             "1 half-open, 2 open", ["model"], registry=r)
        self.upstream_failures = Gauge("conductor_upstream_failures", "Failed upstream "
                                       "attempts since start, by model and error",
                                       ["model", "reason"], registry=r)
        self.upstream_retries = Gauge("conductor_upstream_retries", "Retried upstream "
                                      "attempts since start, by model", ["model"], registry=r)
        self.store_failures = Gauge("conductor_store_write_failures", "Failed commits to "
                                    "the log store since start", registry=r)
        self.store_dropped = Gauge("conductor_store_rows_dropped", "Rows lost since start "
                                   "(beyond the in-memory backlog while writes failed)",
                                   registry=r)
        self.store_backlog = Gauge("conductor_store_backlog_rows", "Rows waiting in memory "
                                   "for the store to accept writes again", registry=r)
        self.store_writable = Gauge("conductor_store_writable", "1 while the store accepts "
                                    "writes", registry=r)
        self.target = Gauge("conductor_quality_target", "Quality target per task type "
                            "(a relative one as it stands now)", ["task_type"], registry=r)
        self.realized = Gauge("conductor_quality_realized", "Mean reward (0-1) of the "
                              "requests answered since start, as scored", ["task_type"],
                              registry=r)
        self.calibrated = Gauge("conductor_quality_calibrated", "1 while judged rewards are "
                                "read through the judge's error rates measured on user "
                                "labels, 0 while on the judge's own scale", ["task_type"],
                                registry=r)
        self.served = Gauge("conductor_quality_served", "Mean quality of the traffic served "
                            "over the target's window, on the scale the router learns on",
                            ["task_type"], registry=r)
        self.judge_error = Gauge("conductor_judge_error_rate", "The judge's error rates as "
                                 "measured on user labels (kind: false_positive, "
                                 "false_negative)", ["task_type", "kind"], registry=r)
        self._alerts: set[str] = set()
        self._cache: dict[tuple[str, str, str, bool], tuple[Any, ...]] = {}

    def _c(self, client: str) -> str:
        return client if client in self.clients else "other"

    def _t(self, task: str) -> str:
        return task if task in self.tasks else "other"

    def _s(self, strategy: str) -> str:
        return strategy if strategy in self.strategies else "other"

    def _children(self, client: str, t: str, s: str, sla: bool) -> tuple[Any, ...]:
        key = (client, t, s, sla)
        got = self._cache.get(key)
        if got is None:  # labels() is a locked dict lookup; do it once per combination
            got = self._cache[key] = (
                self.requests.labels(client, t, s), self.outcomes.labels(
                    t, s, "true" if sla else "false"), self.cost.labels(t, s),
                self.latency.labels(t, s), self.default_cost.labels(t))
        return got

    def outcome(self, client: str, task: str, o: Outcome, explored: bool,
                overhead_ms: float | None, default_usd: float) -> None:
        """One answered request; ``default_usd``: what it would have cost on the default
        strategy."""
        t, s = self._t(task), self._s(o.strategy)
        req, out, cost, lat, default = self._children(self._c(client), t, s, o.sla_met)
        req.inc()
        out.inc()
        if o.fallback_used:
            self.fallbacks.labels(t, s).inc()
        if o.error is not None:
            self.errors.labels(t).inc()
        if explored:
            self.explored.labels(t).inc()
        cost.inc(o.cost_usd)
        default.inc(default_usd)
        lat.observe(o.latency_ms / 1000.0)
        if overhead_ms is not None:
            self.overhead.observe(max(overhead_ms, 0.0) / 1000.0)

    def rate_limited(self, client: str, limit: str) -> None:
        self.rate_limited_c.labels(self._c(client), limit).inc()

    def alerts(self, active: Iterable[str]) -> None:
        now = set(active)
        for name in self._alerts - now:
            self.alert.labels(name).set(0)
        for name in now:
            self.alert.labels(name).set(1)
        self._alerts = now

    def render(self, realized: dict[str, float | None] | None = None,
               store: dict[str, Any] | None = None) -> bytes:
        """The text exposition, with posterior, target, store and judge gauges read at
        scrape time; ``realized``: mean reward per task type since start."""
        health = self.conductor.health
        for model, state in health.circuit_states().items():
            self.circuit.labels(model).set({"closed": 0, "half_open": 1}.get(state, 2))
        for (model, reason), n in list(health.failures.items()):
            self.upstream_failures.labels(model, reason).set(n)
        for model, n in list(health.retries.items()):
            self.upstream_retries.labels(model).set(n)
        if store:
            self.store_failures.set(store["write_failures"])
            self.store_dropped.set(store["rows_dropped"])
            self.store_backlog.set(store["backlog_rows"])
            self.store_writable.set(1 if store["writable"] else 0)
        for task in self.tasks:
            target = self.conductor.target_of(task)
            if target is not None:
                self.target.labels(task).set(target)
        for task, mean in (realized or {}).items():
            if mean is not None and task in self.tasks:
                self.realized.labels(task).set(mean)
        for task, by_strategy in self.conductor.posterior_summary().items():
            for s, (mean, std) in by_strategy.items():
                self.q_mean.labels(task, s).set(mean)
                self.q_std.labels(task, s).set(std)
        r = self.conductor.stats()
        for task, scale in r.quality_scale.items():
            if task not in self.tasks:
                continue
            self.calibrated.labels(task).set(1 if scale["scale"] == "calibrated" else 0)
            if scale["served_quality"] is not None:
                self.served.labels(task).set(scale["served_quality"])
            for kind in ("false_positive", "false_negative"):
                if scale[f"judge_{kind}"] is not None:
                    self.judge_error.labels(task, kind).set(scale[f"judge_{kind}"])
        self.judge_calls.set(r.judge_calls)
        self.judge_failures.set(r.judge_failures)
        self.judge_dropped.set(r.judge_dropped)
        self.judge_cost.set(r.judge_cost_usd)
        return generate_latest(self.registry)
