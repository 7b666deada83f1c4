"""Provider layer under load: 64 concurrent requests against a 50 ms fake upstream.

Compares, on the same upstream (conductor.testing in its own process):
  direct         aiohttp ClientSession posting straight to the upstream (the ceiling)
  httpx-plain    httpx.AsyncClient with its default transport
  httpx-aiohttp  httpx.AsyncClient on the aiohttp transport (what Conductor uses)
  provider       Conductor's OpenAIProvider.complete (timeouts, parsing, usage)
  conductor      Conductor.acomplete with a forced strategy (decide, retries, breaker,
                 record, learn; in-memory log)
Reports throughput, p50 and p99 latency, and the ratio to direct.

    .venv/bin/python benchmarks/provider_load.py [--requests 3000] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import aiohttp
import httpx
import numpy as np
from httpx_aiohttp import AiohttpTransport
from loopback import free_port, start_upstream

from conductor import Conductor
from conductor.config import settings_from_dict
from conductor.providers.base import ProviderCall
from conductor.providers.openai import OpenAIProvider
from conductor.types import Message

BODY = {"model": "m", "messages": [{"role": "user", "content": "Classify: great value"}]}


async def run_load(fn: Callable[[], Awaitable[object]], n: int, concurrency: int
                   ) -> tuple[float, np.ndarray, int]:
    latencies: list[float] = []
    errors = 0
    todo = iter(range(n))

    async def worker() -> None:
        nonlocal errors
        for _ in todo:
            t0 = time.perf_counter()
            try:
                await fn()
            except Exception:  # counted, the load goes on
                errors += 1
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return n / (time.perf_counter() - t0), np.asarray(latencies), errors


def settings(base_url: str):
    return settings_from_dict({
        "providers": {"up": {"kind": "openai", "base_url": base_url}},
        "models": {"m": {"provider": "up", "input_usd_per_1m": 1.0, "output_usd_per_1m": 2.0}},
        "strategies": {"s": {"model": "m"}},
        "policy": {"default_strategy": "s"},
    })


async def bench(base_url: str, n: int, concurrency: int) -> None:
    url = base_url + "/chat/completions"
    rows: list[tuple[str, float, np.ndarray, int]] = []

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
        async def direct() -> object:
            async with session.post(url, json=BODY) as r:
                return await r.json()
        await run_load(direct, 200, concurrency)  # warm up the upstream
        rows.append(("direct", *await run_load(direct, n, concurrency)))

    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        async def plain() -> object:
            return (await client.post(url, json=BODY)).json()
        rows.append(("httpx-plain", *await run_load(plain, n, concurrency)))

    async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=30) as client:
        async def via_aiohttp() -> object:
            return (await client.post(url, json=BODY)).json()
        rows.append(("httpx-aiohttp", *await run_load(via_aiohttp, n, concurrency)))

    s = settings(base_url)
    provider = OpenAIProvider("up", s.providers["up"])
    call = ProviderCall(model="m", messages=(Message(role="user", content="Classify: great"),))
    rows.append(("provider", *await run_load(lambda: provider.complete(call), n, concurrency)))
    await provider.aclose()

    conductor = Conductor(s, seed=1, evaluators=[])
    rows.append(("conductor", *await run_load(
        lambda: conductor.acomplete("Classify: great value", task_type="classify", strategy="s"),
        n, concurrency)))
    await conductor.aclose()

    base = rows[0]
    print(f"{n} requests, {concurrency} concurrent, upstream latency 50 ms")
    print(f"{'client':>14} {'req/s':>8} {'vs direct':>9} {'p50 ms':>8} {'p99 ms':>8} "
          f"{'p99 vs direct':>13} {'errors':>6}")
    for name, rps, lat, errors in rows:
        p50, p99 = np.percentile(lat, [50, 99])
        print(f"{name:>14} {rps:>8.0f} {rps / base[1]:>8.2f}x {p50:>8.1f} {p99:>8.1f} "
              f"{p99 / np.percentile(base[2], 99):>12.2f}x {errors:>6}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--latency-ms", type=float, default=50.0)
    args = ap.parse_args()
    port = free_port()
    server = start_upstream(port, args.latency_ms)
    try:
        asyncio.run(bench(f"http://127.0.0.1:{port}/v1", args.requests, args.concurrency))
    finally:
        server.terminate()
        server.wait(10)


if __name__ == "__main__":
    main()
