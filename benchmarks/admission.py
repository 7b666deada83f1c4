"""Admission cost per request: a client's limits counted in this process (RateLimiter's
windows) against counted in the store for every worker or replica (SQLite's and
PostgreSQL's ledgers), from one process and from several processes admitting for the
same client at once.
Each admission is settled (reconciled) as a request's would be.

The PostgreSQL server is a throwaway cluster (tests/postgres.py) unless --postgres gives
a database URL; it shares this machine.

    .venv/bin/python benchmarks/admission.py [--n 5000] [--workers 4] [--postgres URL]
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from conductor.rate_limiter import RateLimitConfig, RateLimiter
from conductor.storage.postgres import PostgresStore
from conductor.storage.sqlite import SQLiteStore

ROOT = Path(__file__).resolve().parents[1]

# An hourly request limit and a budget: each admission reads the client's totals. (A
# per-minute limit also reads up to that many of the client's rows of the last minute.)
LIMITS = {"acme": RateLimitConfig(requests_per_hour=10**9, max_cost_per_hour_usd=1e9)}


def _admit_many(limiter: RateLimiter, n: int) -> np.ndarray:
    took = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter()
        r = limiter.acquire("acme", 0.001)
        limiter.reconcile(r, 0.0005)
        took[i] = time.perf_counter() - t0
    return took


def _one_process(where: str, n: int) -> np.ndarray:
    """``n`` admissions from a process of its own, on its own store (as a replica's)."""
    store = PostgresStore(where) if where.startswith("postgresql://") else SQLiteStore(where)
    try:
        return _admit_many(RateLimiter(LIMITS, ledger=store.limit_ledger()), n)
    finally:
        store.close()


def _shared(name: str, where: str, n: int, processes: int) -> list[tuple[str, np.ndarray]]:
    rows = [(f"{name}, 1 process", _one_process(where, n))]
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        out = pool.starmap(_one_process, [(where, n // processes)] * processes)
    rows.append((f"{name}, {processes} processes at once", np.concatenate(out)))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--postgres", help="A PostgreSQL database URL (default: a throwaway "
                                       "cluster, which needs the server binaries).")
    args = ap.parse_args()
    rows = [("in this process", _admit_many(RateLimiter(LIMITS), args.n))]
    with tempfile.TemporaryDirectory() as tmp:
        rows += _shared("SQLite", str(Path(tmp) / "limits.db"), args.n, args.workers)
    cluster = None
    url = args.postgres
    if url is None:
        sys.path.insert(0, str(ROOT))
        from tests.postgres import Cluster, server_bin

        bindir = server_bin()
        if bindir is not None:
            cluster = Cluster(bindir).start()
            url = cluster.new_database()
    try:
        if url is not None:
            rows += _shared("PostgreSQL", url, args.n, args.workers)
    finally:
        if cluster is not None:
            cluster.stop()
    print(f"{'admission + settlement':36} {'p50 us':>8} {'p99 us':>8}")
    for name, took in rows:
        p50, p99 = np.percentile(took * 1e6, [50, 99])
        print(f"{name:36} {p50:8.0f} {p99:8.0f}")


if __name__ == "__main__":
    main()
