"""Admission cost per request: a client's limits counted in this process (RateLimiter's
windows) against counted in the store for every worker (SQLiteLimits), alone and with
other workers admitting at the same time.

    .venv/bin/python benchmarks/admission.py [--n 5000] [--workers 4]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from conductor.rate_limiter import RateLimitConfig, RateLimiter
from conductor.storage.sqlite import SQLiteStore

LIMITS = {"acme": RateLimitConfig(requests_per_minute=10**9, max_cost_per_hour_usd=1e9)}


def _admit_many(limiter: RateLimiter, n: int) -> np.ndarray:
    took = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        r = limiter.acquire("acme", 0.001)
        limiter.reconcile(r, 0.0005)
        took[i] = time.perf_counter() - t0
    return took


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    rows = [("in this process", _admit_many(RateLimiter(LIMITS), args.n))]
    with tempfile.TemporaryDirectory() as tmp:
        stores = [SQLiteStore(Path(tmp) / "limits.db") for _ in range(args.workers)]
        shared = [RateLimiter(LIMITS, ledger=s.limit_ledger()) for s in stores]
        rows.append(("in the store, 1 worker", _admit_many(shared[0], args.n)))
        out: list[np.ndarray] = []
        threads = [threading.Thread(target=lambda lim=lim: out.append(
            _admit_many(lim, args.n // args.workers))) for lim in shared]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rows.append((f"in the store, {args.workers} workers at once", np.concatenate(out)))
        for s in stores:
            s.close()
    print(f"{'admission + settlement':36} {'p50 us':>8} {'p99 us':>8}")
    for name, took in rows:
        p50, p99 = np.percentile(took * 1e6, [50, 99])
        print(f"{name:36} {p50:8.0f} {p99:8.0f}")


if __name__ == "__main__":
    main()
