"""A fake OpenAI-compatible upstream: a real HTTP server whose behaviour a test sets.

Used by the test suite and the benchmarks (``python -m conductor.testing --port 8101
--latency-ms 50``). It answers ``POST /v1/chat/completions`` (and ``/chat/completions``)
like OpenAI does, and can be told to be slow, to drop ``usage``, to fail with given
statuses (429 with Retry-After, 500), to accept a connection and never answer, or to cut
a stream midway.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Behaviour:
    """What the fake upstream does; change fields between (or during) tests."""

    latency_s: float = 0.0
    answer: Callable[[dict[str, Any]], str] | str = "fake answer"
    usage: bool = True
    fail_statuses: list[int] = field(default_factory=list)  # consumed one per request
    fail_body: str = '{"error": {"message": "upstream is overloaded", "type": "server_error"}}'
    retry_after: str | None = None
    hang: bool = False
    stream_cut_after: int | None = None  # chunks sent before the connection is dropped
    stream_chunks: int = 4
    fail_models: set[str] = field(default_factory=set)  # always 500 for these models
    hang_models: set[str] = field(default_factory=set)  # never answer for these models


class FakeUpstream:
    """Run with ``start()`` (a background thread, port 0 picks a free port) and ``stop()``."""

    def __init__(self, behaviour: Behaviour | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.behaviour = behaviour or Behaviour()
        self.host = host
        self.port = port
        self.requests: list[dict[str, Any]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._ready = threading.Event()
        self._hung: list[asyncio.Future[None]] = []

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        app.router.add_post("/chat/completions", self._handle)
        return app

    def _answer(self, body: dict[str, Any]) -> str:
        a = self.behaviour.answer
        return a(body) if callable(a) else a

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        b = self.behaviour
        if b.hang or body.get("model") in b.hang_models:
            fut = asyncio.get_running_loop().create_future()
            self._hung.append(fut)
            await fut  # never resolved until stop(): the client must time out
        if body.get("model") in b.fail_models:
            return web.Response(status=500, text=b.fail_body, content_type="application/json")
        if b.fail_statuses:
            status = b.fail_statuses.pop(0)
            headers = {"Retry-After": b.retry_after} if b.retry_after and status == 429 else {}
            return web.Response(status=status, text=b.fail_body, headers=headers,
                                content_type="application/json")
        if b.latency_s:
            await asyncio.sleep(b.latency_s)
        text = self._answer(body)
        prompt_tokens = sum(len(str(m.get("content", ""))) // 4 + 4 for m in body["messages"])
        completion_tokens = max(1, len(text) // 4)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        if body.get("stream"):
            return await self._stream(request, body, text, usage)
        payload: dict[str, Any] = {
            "id": f"chatcmpl-fake-{len(self.requests)}", "object": "chat.completion",
            "created": int(time.time()), "model": body.get("model", "fake"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop"}],
        }
        if b.usage:
            payload["usage"] = usage
        return web.json_response(payload)

    async def _stream(self, request: web.Request, body: dict[str, Any], text: str,
                      usage: dict[str, int]) -> web.StreamResponse:
        b = self.behaviour
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        n = max(1, b.stream_chunks)
        step = max(1, -(-len(text) // n))
        pieces = [text[i:i + step] for i in range(0, len(text), step)] or [""]
        base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": body.get("model", "fake")}
        for i, piece in enumerate(pieces):
            if b.stream_cut_after is not None and i >= b.stream_cut_after:
                assert request.transport is not None
                request.transport.close()  # drop the connection: no [DONE]
                return resp
            chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece},
                                          "finish_reason": None}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
        final = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(f"data: {json.dumps(final)}\n\n".encode())
        if b.usage:
            await resp.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
                             .encode())
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _serve(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self._ready.set()

    def start(self) -> FakeUpstream:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self._serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-upstream", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is None:
            return

        async def shutdown() -> None:
            for f in self._hung:
                if not f.done():
                    f.cancel()
            if self._runner is not None:
                await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        loop.close()
        self._loop = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description="Run the fake OpenAI-compatible upstream.")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8101)
    ap.add_argument("--latency-ms", type=float, default=0.0)
    args = ap.parse_args()
    up = FakeUpstream(Behaviour(latency_s=args.latency_ms / 1000.0), args.host, args.port)
    web.run_app(up.app(), host=args.host, port=args.port, access_log=None, print=None)


if __name__ == "__main__":
    main()
