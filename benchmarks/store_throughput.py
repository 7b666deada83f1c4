"""SQLite store: sustained write throughput and the latency it adds to a completion.

1. Throughput: one producer queues N completions' worth of rows (request, decision,
   outcome, reward = 4 rows each) as fast as it can; the writer commits them in batches.
   Reported: rows/s and completions/s until everything is committed.
2. Added latency: Conductor.complete on the demo world (no simulated sleep) with the
   in-memory store vs the SQLite store; p50/p99 of each and the difference.

    .venv/bin/python benchmarks/store_throughput.py [--completions 50000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from conductor import Conductor
from conductor.storage.base import MemoryLogStore
from conductor.storage.sqlite import SQLiteStore
from conductor.types import (
    CompletionRequest,
    Constraints,
    Decision,
    Mode,
    Outcome,
    Reward,
    StrategySample,
)


def throughput(path: Path, n: int) -> tuple[float, float]:
    store = SQLiteStore(path)
    samples = tuple(StrategySample(strategy=f"s{i}", quality=0.9, latency_p95_ms=900.0,
                                   cost_usd=1e-4, feasible=True) for i in range(4))
    t0 = time.perf_counter()
    for i in range(n):
        rid = f"r{i}"
        d = Decision(request_id=rid, task_type="classify", strategy="s1", model="m",
                     mode=Mode.DIRECT, predicted_quality=0.9, predicted_latency_ms=800.0,
                     predicted_cost_usd=1e-4, propensity=0.5, explored=False,
                     constraint_relaxed=False, policy_version="v1",
                     constraints=Constraints(min_quality=0.8), samples=samples,
                     created_at=time.time())
        store.record_decision(d, CompletionRequest(prompt="Classify this review.",
                                                   task_type="classify", request_id=rid))
        store.record_outcome(Outcome(request_id=rid, strategy="s1", model="m",
                                     latency_ms=700.0, input_tokens=40, output_tokens=3,
                                     cost_usd=1e-4, text="positive"), task_type="classify")
        store.record_reward(Reward(request_id=rid, source="heuristic", score=1.0,
                                   task_type="classify", strategy="s1"))
    queued = time.perf_counter() - t0
    store.flush()
    elapsed = time.perf_counter() - t0
    store.close()
    print(f"queued {n} completions in {queued:.2f} s; all committed after {elapsed:.2f} s")
    return 4 * n / elapsed, n / elapsed


def added_latency(path: Path, n: int) -> None:
    rows = []
    for name, store in (("memory", MemoryLogStore()), ("sqlite", SQLiteStore(path))):
        c = Conductor(seed=1, log_store=store)
        for _ in range(200):
            c.complete("Classify: great value", task_type="classify")
        times = np.empty(n)
        for i in range(n):
            t0 = time.perf_counter()
            c.complete("Classify: great value", task_type="classify")
            times[i] = (time.perf_counter() - t0) * 1000
        c.close()
        p50, p99 = np.percentile(times, [50, 99])
        rows.append((name, p50, p99))
        print(f"complete() with {name:>6} store: p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    print(f"added by SQLite: p50 {rows[1][1] - rows[0][1]:+.3f} ms, "
          f"p99 {rows[1][2] - rows[0][2]:+.3f} ms")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--completions", type=int, default=50_000)
    ap.add_argument("--latency-samples", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        rows_s, comp_s = throughput(Path(d) / "t.db", args.completions)
        print(f"throughput: {rows_s:,.0f} rows/s = {comp_s:,.0f} completions/s (4 rows each)")
        added_latency(Path(d) / "l.db", args.latency_samples)


if __name__ == "__main__":
    main()
