"""Gateway overhead of `conductor serve`, in one run beside its floor and its peer.

The fake upstream (conductor.testing), each gateway and the load generator (this process,
aiohttp) are separate processes on 127.0.0.1, sharing the machine. Measured the same way:

- direct: the upstream called directly;
- forwarder: a bare Litestar handler forwarding through the same httpx-on-aiohttp client
  (benchmarks/bare_forwarder.py): the floor of the stack, before any routing;
- conductor, hints: `model: "auto"` with a task type and a quality floor;
- conductor, plain: `model: "auto"` and nothing else (no floor: the propensity is the
  one-dimensional integral of the no-floor rule, computed after the answer);
- conductor, target: `model: "auto"` and a task type whose quality target is 0.95 of the
  strong strategy's quality, as every task type of the built-in config has (the cheapest
  mix meeting the target; its propensity is a Monte Carlo estimate, after the answer);
- litellm (with ``--litellm PATH``): LiteLLM's proxy, one worker, no database.
- the same forwarder and Conductor under uvicorn (the server before Granian); "vs fwd"
  compares each with the first forwarder row (Granian).

1. Sequential requests against a 0 ms upstream: p50/p99 added to direct.
2. 64 concurrent requests against a 50 ms upstream: throughput and p99 against direct and
   against the forwarder; errors; resident memory after the load; the CPU the gateway's
   processes spent per request (less noisy than throughput on a shared machine).

    .venv/bin/python benchmarks/gateway_overhead.py [--sequential 2000] [--concurrent 5000]
        [--litellm /path/to/venv/bin/litellm] [--only "forwarder;conductor, target"]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
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
MESSAGES = [{"role": "user", "content": "Classify: great value"}]
BODY = {"model": "auto", "messages": MESSAGES,
        "conductor": {"task_type": "classify", "min_quality": 0.8}}
PLAIN_BODY = {"model": "auto", "messages": MESSAGES}
TARGET_BODY = {"model": "auto", "messages": MESSAGES, "conductor": {"task_type": "classify"}}
TARGET_CONFIG = """
[task_types.classify]
quality_target = { relative_to = "strong", ratio = 0.95 }
"""
DIRECT_BODY = {"model": "small", "messages": MESSAGES}


def _tree(pid: int) -> list[int]:
    """A process and its children (Granian serves from a child)."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = children.read_text().split() if children.exists() else []
    return [pid, *map(int, kids)]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process and its children so far (all threads)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def rss_mib(pid: int) -> float:
    """Resident memory of a process and its children (Granian serves from a child)."""
    total = 0.0
    for p in _tree(pid):
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total or float("nan")


async def load(url: str | list[str], body: dict, n: int, concurrency: int,
               headers: dict[str, str] | None = None) -> tuple[float, np.ndarray, int]:
    """``n`` requests over ``concurrency`` connections (alternating between the URLs of a
    list, as a round-robin load balancer): throughput, latencies, errors."""
    urls = [url] if isinstance(url, str) else url
    latencies: list[float] = []
    errors = 0
    todo = iter(range(n))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256),
                                     headers=headers or {}) as s:
        async def worker() -> None:
            nonlocal errors
            for i in todo:
                t0 = time.perf_counter()
                async with s.post(urls[i % len(urls)], json=body) as r:
                    await r.read()
                    errors += r.status != 200
                latencies.append((time.perf_counter() - t0) * 1000)

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0), np.asarray(latencies), errors


def start_conductor(port: int, upstream_port: int, workdir: Path,
                    workers: int = 1, server: str = "granian", *, db: str | None = None,
                    extra_config: str = "") -> subprocess.Popen[bytes]:
    """`conductor serve` on the fake upstream: on ``db`` (default: a SQLite file in
    ``workdir``), with ``extra_config`` appended to the config (clients, say)."""
    cfg = workdir / "bench.toml"
    cfg.write_text(CONFIG.format(port=upstream_port) + extra_config)
    p = subprocess.Popen([sys.executable, "-m", "conductor.cli", "serve", "--config", str(cfg),
                          "--port", str(port), "--db", db or str(workdir / "bench.db"),
                          "--workers", str(workers), "--server", server],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wait_port(port, timeout_s=60)
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


def start_forwarder(port: int, upstream_port: int,
                    server: str = "granian") -> subprocess.Popen[bytes]:
    p = subprocess.Popen([sys.executable, str(Path(__file__).with_name("bare_forwarder.py")),
                          "--port", str(port), "--upstream",
                          f"http://127.0.0.1:{upstream_port}/v1", "--server", server],
                         stderr=subprocess.DEVNULL)
    wait_port(port)
    return p


def run(url: str, body: dict, n: int, c: int, pid: int | None = None
        ) -> tuple[float, np.ndarray, int, float]:
    """Warm up, then ``n`` requests: throughput, latencies, errors and the CPU the process
    ``pid`` (and its children) spent per request, in ms (NaN without a pid)."""
    asyncio.run(load(url, body, 300, c))  # warm up
    before = cpu_s(pid) if pid else float("nan")
    rps, lat, errors = asyncio.run(load(url, body, n, c))
    if pid:
        time.sleep(1.0)  # the bookkeeping after the last answer counts too
    used = cpu_s(pid) - before if pid else float("nan")
    return rps, lat, errors, used / n * 1000


def phase(concurrent: bool, up: int, n: int, args: argparse.Namespace, work: Path) -> None:
    c = 64 if concurrent else 1
    direct_url = f"http://127.0.0.1:{up}/v1/chat/completions"
    gateways: list[tuple[str, Callable[[int], subprocess.Popen[bytes]], dict]] = [
        ("forwarder", lambda port: start_forwarder(port, up), DIRECT_BODY),
        ("conductor, hints", lambda port: start_conductor(port, up, work, args.workers), BODY),
        ("conductor, plain", lambda port: start_conductor(port, up, work, args.workers),
         PLAIN_BODY),
        ("conductor, target", lambda port: start_conductor(
            port, up, work, args.workers, db=str(work / "target.db"),
            extra_config=TARGET_CONFIG), TARGET_BODY),
        ("fwd, uvicorn", lambda port: start_forwarder(port, up, "uvicorn"), DIRECT_BODY),
        ("cond., hints, uvic.", lambda port: start_conductor(port, up, work, args.workers,
                                                              "uvicorn"), BODY)]
    if args.only:
        wanted = [w.strip() for w in args.only.split(";")]
        unknown = set(wanted) - {g[0] for g in gateways}
        if unknown:
            raise SystemExit(f"--only: no gateway row named {', '.join(sorted(unknown))}; "
                             f"the rows: {'; '.join(g[0] for g in gateways)}")
        gateways = [g for g in gateways if g[0] in wanted]
    if args.litellm:
        gateways.append(("litellm", lambda port: start_litellm(args.litellm, port, up, work),
                         {"model": "small", "messages": MESSAGES}))
    d_rps, d_lat, _, _ = run(direct_url, DIRECT_BODY, n, c)
    d50, d99 = np.percentile(d_lat, [50, 99])
    print(f"{'gateway':<18} {'req/s':>7} {'vs direct':>9} {'vs fwd':>7} {'p50 ms':>8} "
          f"{'+p50':>6} {'p99 ms':>8} {'+p99':>7} {'p99/direct':>10} {'errors':>6} {'MiB':>5} "
          f"{'CPU ms/req':>10}")
    print(f"{'direct':<18} {d_rps:>7.0f} {1:>9.2f} {'':>7} {d50:>8.2f} {'':>6} {d99:>8.2f}")
    fwd_rps = None
    for name, start, body in gateways:
        port = free_port()
        proc = start(port)
        try:
            rps, lat, errs, cpu = run(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                                      n, c, proc.pid)
            mib = rss_mib(proc.pid)
        finally:
            proc.terminate()
            proc.wait(30)
        g50, g99 = np.percentile(lat, [50, 99])
        fwd_rps = fwd_rps or rps
        print(f"{name:<18} {rps:>7.0f} {rps / d_rps:>9.2f} {rps / fwd_rps:>7.2f} {g50:>8.2f} "
              f"{g50 - d50:>+6.2f} {g99:>8.2f} {g99 - d99:>+7.2f} {g99 / d99:>10.2f} "
              f"{errs:>6} {mib:>5.0f} {cpu:>10.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sequential", type=int, default=2000)
    ap.add_argument("--concurrent", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=1,
                    help="Conductor worker processes.")
    ap.add_argument("--litellm", help="Path to a `litellm` proxy binary (its own venv) to "
                                      "measure beside Conductor.")
    ap.add_argument("--only", help="Gateway rows to run, separated by semicolons (default: all).")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        up0, up50 = free_port(), free_port()
        procs = [start_upstream(up0, 0.0), start_upstream(up50, 50.0)]
        try:
            print(f"1. sequential, 0 ms upstream, {args.sequential} requests")
            phase(False, up0, args.sequential, args, work)
            print(f"2. 64 concurrent, 50 ms upstream, {args.concurrent} requests")
            phase(True, up50, args.concurrent, args, work)
        finally:
            for p in procs:
                p.terminate()
                p.wait(30)


if __name__ == "__main__":
    main()
