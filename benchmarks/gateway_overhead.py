"""Gateway overhead of `conductor serve` against calling the upstream directly.

Both the fake upstream (conductor.testing) and Conductor run as their own processes on
127.0.0.1; the load generator is a third (this one, aiohttp). Conductor routes with
`model: "auto"` over two strategies on the upstream, logging to SQLite.

1. Sequential requests against a 0 ms upstream: p50/p99 of Conductor minus direct.
2. 64 concurrent requests against a 50 ms upstream: throughput ratio, p99 ratio, errors.
3. Conductor's resident memory after the load.

    .venv/bin/python benchmarks/gateway_overhead.py [--sequential 2000] [--concurrent 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import numpy as np
from loopback import free_port, start_upstream, wait_port

CONFIG = """
[providers.up]
kind = "openai"
base_url = "http://127.0.0.1:{port}/v1"
[models.small]
provider = "up"
input_usd_per_1m = 0.15
output_usd_per_1m = 0.60
[models.large]
provider = "up"
input_usd_per_1m = 2.5
output_usd_per_1m = 10.0
[strategies.cheap]
model = "small"
prior_quality = 0.9
[strategies.strong]
model = "large"
prior_quality = 0.95
[policy]
default_strategy = "strong"
"""
BODY = {"model": "auto", "messages": [{"role": "user", "content": "Classify: great value"}],
        "conductor": {"task_type": "classify", "min_quality": 0.8}}
DIRECT_BODY = {"model": "small", "messages": BODY["messages"]}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def load(url: str, body: dict, n: int, concurrency: int) -> tuple[float, np.ndarray, int]:
    latencies: list[float] = []
    errors = 0
    todo = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as s:
        async def worker() -> None:
            nonlocal errors
            for _ in todo:
                t0 = time.perf_counter()
                async with s.post(url, json=body) as r:
                    await r.read()
                    errors += r.status != 200
                latencies.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0), np.asarray(latencies), errors


def start_conductor(port: int, upstream_port: int, workdir: Path) -> subprocess.Popen[bytes]:
    cfg = workdir / "bench.toml"
    cfg.write_text(CONFIG.format(port=upstream_port))
    p = subprocess.Popen([sys.executable, "-m", "conductor.cli", "serve", "--config", str(cfg),
                          "--port", str(port), "--db", str(workdir / "bench.db")],
                         stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wait_port(port)
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sequential", type=int, default=2000)
    ap.add_argument("--concurrent", type=int, default=5000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        up0, up50, cport = free_port(), free_port(), free_port()
        procs = [start_upstream(up0, 0.0), start_upstream(up50, 50.0)]
        try:
            # 1. sequential, 0 ms upstream
            conductor = start_conductor(cport, up0, work)
            procs.append(conductor)
            direct_url = f"http://127.0.0.1:{up0}/v1/chat/completions"
            gw_url = f"http://127.0.0.1:{cport}/v1/chat/completions"
            asyncio.run(load(gw_url, BODY, 300, 1))  # warm up
            asyncio.run(load(direct_url, DIRECT_BODY, 300, 1))
            _, direct, _ = asyncio.run(load(direct_url, DIRECT_BODY, args.sequential, 1))
            _, gw, errs = asyncio.run(load(gw_url, BODY, args.sequential, 1))
            d50, d99 = np.percentile(direct, [50, 99])
            g50, g99 = np.percentile(gw, [50, 99])
            print(f"1. sequential, 0 ms upstream, {args.sequential} requests:")
            print(f"   direct p50 {d50:.2f} ms p99 {d99:.2f} ms; conductor p50 {g50:.2f} ms "
                  f"p99 {g99:.2f} ms; added p50 {g50 - d50:+.2f} ms, p99 {g99 - d99:+.2f} ms; "
                  f"errors {errs}")
            conductor.terminate()
            conductor.wait(30)
            procs.remove(conductor)

            # 2. 64 concurrent, 50 ms upstream
            conductor = start_conductor(cport, up50, work)
            procs.append(conductor)
            direct_url = f"http://127.0.0.1:{up50}/v1/chat/completions"
            asyncio.run(load(gw_url, BODY, 500, 64))
            asyncio.run(load(direct_url, DIRECT_BODY, 500, 64))
            drps, dlat, _ = asyncio.run(load(direct_url, DIRECT_BODY, args.concurrent, 64))
            grps, glat, errs = asyncio.run(load(gw_url, BODY, args.concurrent, 64))
            print(f"2. 64 concurrent, 50 ms upstream, {args.concurrent} requests:")
            print(f"   direct {drps:.0f} req/s p50 {np.percentile(dlat, 50):.1f} ms "
                  f"p99 {np.percentile(dlat, 99):.1f} ms")
            print(f"   conductor {grps:.0f} req/s p50 {np.percentile(glat, 50):.1f} ms "
                  f"p99 {np.percentile(glat, 99):.1f} ms; throughput {grps / drps:.2f}x, "
                  f"p99 {np.percentile(glat, 99) / np.percentile(dlat, 99):.2f}x; "
                  f"errors {errs}")
            print(f"3. conductor resident memory after the load: "
                  f"{rss_mib(conductor.pid):.0f} MiB")
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)


if __name__ == "__main__":
    main()
