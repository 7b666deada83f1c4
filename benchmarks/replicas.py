"""What the shared database costs a request, and what a second replica adds.

In one run, against the same fake upstream (conductor.testing, its own process):

- direct: the upstream called directly (the floor);
- SQLite: one `conductor serve` on a SQLite file (the default);
- PostgreSQL, 1 replica: one `conductor serve --db postgresql://...`;
- PostgreSQL, 2 replicas: two processes on the same database, the load alternating
  between them (a load balancer's round robin);

each for a client without limits (its requests never touch the database on the request
path: decisions and outcomes are queued, learning is in memory) and for a client with
limits (each admission is a transaction in the database: SQLite's BEGIN IMMEDIATE,
PostgreSQL's per-client advisory lock).

1. Sequential requests, 0 ms upstream: the p50 and p99 each setup adds to direct.
2. 64 concurrent requests, 50 ms upstream: throughput.

The PostgreSQL server is a throwaway cluster (tests/postgres.py) unless --postgres gives
a database URL. Everything shares this machine: with 2 cores, a second replica competes
with the first, the upstream, the database and the load generator.

    .venv/bin/python benchmarks/replicas.py [--sequential 2000] [--concurrent 5000]
        [--postgres postgresql://user@host/db]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from gateway_overhead import DIRECT_BODY, load, start_conductor
from loopback import free_port, start_upstream

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"free": "sk-bench-free", "acme": "sk-bench-acme"}
CLIENTS = "".join(
    f'\n[clients.{name}]\napi_key_sha256 = "{hashlib.sha256(key.encode()).hexdigest()}"\n'
    + ("requests_per_minute = 1000000000\n" if name == "acme" else "")
    for name, key in KEYS.items())
BODY = {"model": "auto", "messages": DIRECT_BODY["messages"],
        "conductor": {"task_type": "classify", "min_quality": 0.8}}


def run(urls: list[str], body: dict, n: int, c: int,
        key: str | None = None) -> tuple[float, np.ndarray, int]:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    asyncio.run(load(urls, body, 300, c, headers))  # warm up
    return asyncio.run(load(urls, body, n, c, headers))


def start(db: str, upstream_port: int, work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    p = start_conductor(port, upstream_port, work, db=db, extra_config=CLIENTS)
    return p, f"http://127.0.0.1:{port}/v1/chat/completions"


def phase(concurrent: bool, up: int, n: int, databases: dict[str, str], work: Path) -> None:
    c = 64 if concurrent else 1
    d_rps, d_lat, _ = run([f"http://127.0.0.1:{up}/v1/chat/completions"], DIRECT_BODY, n, c)
    d50, d99 = np.percentile(d_lat, [50, 99])
    print(f"{'setup':<34} {'req/s':>7} {'vs direct':>9} {'p50 ms':>7} {'+p50':>6} "
          f"{'p99 ms':>7} {'+p99':>6} {'errors':>6}")
    print(f"{'direct':<34} {d_rps:>7.0f} {1:>9.2f} {d50:>7.2f} {'':>6} {d99:>7.2f}")
    setups = [("SQLite", databases["sqlite"], 1), ("PostgreSQL, 1 replica", databases["pg"], 1),
              ("PostgreSQL, 2 replicas", databases["pg"], 2)]
    for name, db, replicas in setups:
        procs = [start(db, up, work) for _ in range(replicas)]
        try:
            for client in ("free", "acme"):
                rps, lat, errs = run([u for _, u in procs], BODY, n, c, KEYS[client])
                g50, g99 = np.percentile(lat, [50, 99])
                label = f"{name}, {'limited' if client == 'acme' else 'no limits'}"
                print(f"{label:<34} {rps:>7.0f} {rps / d_rps:>9.2f} {g50:>7.2f} "
                      f"{g50 - d50:>+6.2f} {g99:>7.2f} {g99 - d99:>+6.2f} {errs:>6}")
        finally:
            for p, _ in procs:
                p.terminate()
                p.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sequential", type=int, default=2000)
    ap.add_argument("--concurrent", type=int, default=5000)
    ap.add_argument("--postgres", help="A PostgreSQL database URL (default: a throwaway "
                                       "cluster, which needs the server binaries).")
    args = ap.parse_args()
    cluster = None
    if args.postgres is None:
        sys.path.insert(0, str(ROOT))
        from tests.postgres import Cluster, server_bin

        bindir = server_bin()
        if bindir is None:
            sys.exit("no PostgreSQL server binaries: give --postgres URL")
        cluster = Cluster(bindir).start()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        up0, up50 = free_port(), free_port()
        procs = [start_upstream(up0, 0.0), start_upstream(up50, 50.0)]
        try:
            for k, (title, concurrent, up, n) in enumerate((
                    (f"sequential, 0 ms upstream, {args.sequential} requests", False, up0,
                     args.sequential),
                    (f"64 concurrent, 50 ms upstream, {args.concurrent} requests", True, up50,
                     args.concurrent))):
                pg = args.postgres or cluster.new_database()  # type: ignore[union-attr]
                print(f"{k + 1}. {title}")
                phase(concurrent, up, n, {"sqlite": str(work / f"bench{k}.db"), "pg": pg},
                      work)
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)
            if cluster is not None:
                cluster.stop()


if __name__ == "__main__":
    main()
