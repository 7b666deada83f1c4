"""Gateway overhead of `conductor serve` against calling the upstream directly.

Both the fake upstream (conductor.testing) and Conductor run as their own processes on
127.0.0.1; the load generator is a third (this one, aiohttp). Conductor routes with
`model: "auto"` over two strategies on the upstream, logging to SQLite.

1. Sequential requests against a 0 ms upstream: p50/p99 of Conductor minus direct.
2. 64 concurrent requests against a 50 ms upstream: throughput ratio, p99 ratio, errors.
3. Resident memory after the load.
With ``--litellm PATH`` the LiteLLM proxy (one worker, no database) is measured the same way.

    .venv/bin/python benchmarks/gateway_overhead.py [--sequential 2000] [--concurrent 5000]
        [--litellm /path/to/venv/bin/litellm]
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


def start_conductor(port: int, upstream_port: int, workdir: Path,
                    workers: int = 1) -> subprocess.Popen[bytes]:
    cfg = workdir / "bench.toml"
    cfg.write_text(CONFIG.format(port=upstream_port))
    p = subprocess.Popen([sys.executable, "-m", "conductor.cli", "serve", "--config", str(cfg),
                          "--port", str(port), "--db", str(workdir / "bench.db"),
                          "--workers", str(workers)],
                         stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wait_port(port)
    return p


LITELLM_CONFIG = """model_list:
  - model_name: small
    litellm_params:
      model: openai/small
      api_base: http://127.0.0.1:{port}/v1
      api_key: unused
"""


def start_litellm(binary: str, port: int, upstream_port: int, workdir: Path
                  ) -> subprocess.Popen[bytes]:
    """LiteLLM's proxy (its own venv), one worker, no database, local cost map."""
    cfg = workdir / "litellm.yaml"
    cfg.write_text(LITELLM_CONFIG.format(port=upstream_port))
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_DANGEROUSLY_PERMIT_WEAK_OR_UNSET_MASTER_KEY": "true"}
    p = subprocess.Popen([binary, "--config", str(cfg), "--host", "127.0.0.1", "--port",
                          str(port), "--num_workers", "1"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, env=env)
    wait_port(port, timeout_s=90)
    return p


def measure(name: str, url: str, body: dict, direct_url: str, n: int, concurrent: bool,
            pid: int) -> None:
    asyncio.run(load(url, body, 300, 64 if concurrent else 1))  # warm up
    asyncio.run(load(direct_url, DIRECT_BODY, 300, 64 if concurrent else 1))
    c = 64 if concurrent else 1
    drps, dlat, _ = asyncio.run(load(direct_url, DIRECT_BODY, n, c))
    grps, glat, errs = asyncio.run(load(url, body, n, c))
    d50, d99 = np.percentile(dlat, [50, 99])
    g50, g99 = np.percentile(glat, [50, 99])
    if concurrent:
        print(f"   {name:<10} {grps:6.0f} req/s = {grps / drps:.2f}x direct ({drps:.0f}); "
              f"p50 {g50:.1f} ms, p99 {g99:.1f} ms = {g99 / d99:.2f}x direct ({d99:.1f} ms); "
              f"errors {errs}; resident {rss_mib(pid):.0f} MiB")
    else:
        print(f"   {name:<10} p50 {g50:.2f} ms (+{g50 - d50:.2f}), p99 {g99:.2f} ms "
              f"(+{g99 - d99:.2f}) vs direct p50 {d50:.2f} / p99 {d99:.2f} ms; errors {errs}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sequential", type=int, default=2000)
    ap.add_argument("--concurrent", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=1,
                    help="Conductor worker processes (each learns on its own).")
    ap.add_argument("--litellm", help="Path to a `litellm` proxy binary (its own venv) to "
                                      "measure beside Conductor.")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        up0, up50, cport, lport = free_port(), free_port(), free_port(), free_port()
        procs = [start_upstream(up0, 0.0), start_upstream(up50, 50.0)]
        gw_url = f"http://127.0.0.1:{cport}/v1/chat/completions"
        ll_url = f"http://127.0.0.1:{lport}/v1/chat/completions"
        ll_body = {"model": "small", "messages": BODY["messages"]}
        try:
            for concurrent, up in ((False, up0), (True, up50)):
                direct_url = f"http://127.0.0.1:{up}/v1/chat/completions"
                n = args.concurrent if concurrent else args.sequential
                print("2. 64 concurrent, 50 ms upstream:" if concurrent else
                      "1. sequential, 0 ms upstream:", f"{n} requests")
                conductor = start_conductor(cport, up, work, args.workers)
                measure("conductor", gw_url, BODY, direct_url, n, concurrent, conductor.pid)
                conductor.terminate()
                conductor.wait(30)
                if args.litellm:
                    litellm = start_litellm(args.litellm, lport, up, work)
                    measure("litellm", ll_url, ll_body, direct_url, n, concurrent, litellm.pid)
                    litellm.terminate()
                    litellm.wait(30)
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)


if __name__ == "__main__":
    main()
