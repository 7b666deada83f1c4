"""The floor of Conductor's stack: a minimal Litestar handler that forwards the request
body upstream through the same httpx-on-aiohttp client, and returns the upstream's bytes.
No routing, no logging, no learning. Run by benchmarks/gateway_overhead.py.

    .venv/bin/python benchmarks/bare_forwarder.py --port 8102 --upstream http://127.0.0.1:8101/v1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import AsyncIterator

import httpx
import uvicorn
from httpx_aiohttp import AiohttpTransport
from litestar import Litestar, Request, Response, post


def create_app(upstream: str) -> Litestar:
    @contextlib.asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        app.state.client = httpx.AsyncClient(base_url=upstream,
                                             transport=AiohttpTransport(limits=limits))
        try:
            yield
        finally:
            await app.state.client.aclose()

    @post("/v1/chat/completions", status_code=200)
    async def forward(request: Request) -> Response[bytes]:  # type: ignore[type-arg]
        body = await request.body()
        r = await request.app.state.client.post(
            "/chat/completions", content=body, headers={"Content-Type": "application/json"})
        return Response(r.content, status_code=r.status_code, media_type="application/json")

    return Litestar(route_handlers=[forward], lifespan=[lifespan])


def app_from_env() -> Litestar:
    """For Granian, which imports its app: the upstream from FORWARD_UPSTREAM."""
    return create_app(os.environ["FORWARD_UPSTREAM"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    ap.add_argument("--server", choices=["granian", "uvicorn"], default="granian")
    args = ap.parse_args()
    if args.server == "uvicorn":
        uvicorn.run(create_app(args.upstream), host="127.0.0.1", port=args.port,
                    log_level="warning", access_log=False)
        return
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces

    os.environ["FORWARD_UPSTREAM"] = args.upstream
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    Granian("bare_forwarder:app_from_env", factory=True, address="127.0.0.1", port=args.port,
            interface=Interfaces.ASGI, http=HTTPModes.http1, log_enabled=False).serve()


if __name__ == "__main__":
    main()
