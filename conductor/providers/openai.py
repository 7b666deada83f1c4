"""One client for every OpenAI-compatible chat completions API.

OpenAI, Azure OpenAI, OpenRouter, Together, Groq, vLLM, Ollama and llama.cpp's server all
answer ``POST {base_url}/chat/completions``. Requests go through httpx's API on an
aiohttp-backed transport (``httpx-aiohttp``): plain ``httpx.AsyncClient`` collapses under
concurrency (encode/httpx#3215; see ``benchmarks/provider_load.py`` for the numbers here).

Timeouts: connect, time to first byte (response headers, and the first stream event),
idle time between stream chunks, and a total; each is enforced with asyncio timeouts so
an upstream that accepts the connection and never answers fails on time. Errors are
translated into Conductor's error tree at this boundary, with the upstream's message.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import os
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import msgspec
from httpx_aiohttp import AiohttpTransport
from httpx_sse import EventSource

from conductor.config import ProviderConfig
from conductor.errors import (
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderServerError,
    ProviderStreamError,
    ProviderTimeoutError,
    describe,
)
from conductor.providers.base import (
    ProviderCall,
    ProviderResponse,
    StreamChunk,
    estimate_prompt_tokens,
    estimate_tokens,
)

log = logging.getLogger("conductor.providers")


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError):
        return None
    return max(0.0, when - (now if now is not None else time.time()))


def _upstream_message(body: bytes) -> str:
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body[:500].decode("utf-8", "replace")
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict) and "message" in err:
            return str(err["message"])
        if isinstance(err, str):
            return err
        if "message" in data:
            return str(data["message"])
    return body[:500].decode("utf-8", "replace")


def translate_status(provider: str, status: int, body: bytes,
                     headers: httpx.Headers) -> ProviderError:
    """An upstream error response as a Conductor error, keeping the upstream's message."""
    msg = f"{provider}: upstream {status}: {_upstream_message(body)}"
    if status == 429:
        return ProviderRateLimitedError(msg, provider=provider, status=status,
                                        retry_after_s=parse_retry_after(headers.get("retry-after")))
    if status in (401, 403):
        return ProviderAuthError(msg, provider=provider, status=status)
    if status >= 500:
        return ProviderServerError(msg, provider=provider, status=status)
    return ProviderBadRequestError(msg, provider=provider, status=status)


def _response(call: ProviderCall, text: str, finish: str, usage: dict[str, Any],
              latency_ms: float) -> ProviderResponse:
    """The answer with the upstream's token usage, or our estimate (marked) without one."""
    pt, ct = usage.get("prompt_tokens"), usage.get("completion_tokens")
    return ProviderResponse(
        text=text,
        input_tokens=pt if isinstance(pt, int) else estimate_prompt_tokens(call.messages),
        output_tokens=ct if isinstance(ct, int) else estimate_tokens(text),
        latency_ms=latency_ms, finish_reason=finish,
        usage_estimated=not (isinstance(pt, int) and isinstance(ct, int)))


class _NoCookies(httpx.Cookies):
    """Upstream APIs do not use cookies; storing them costs time on every response."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Completion(msgspec.Struct):
    choices: list[dict[str, Any]] = []
    usage: dict[str, Any] | None = None


class OpenAIProvider:
    """An OpenAI-compatible upstream. One HTTP client per event loop (the request path and
    the judge workers run on different loops), created on first use inside that loop and
    closed by ``aclose`` called on the same loop."""

    virtual_time = False

    def __init__(self, name: str, config: ProviderConfig, *, api_key: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None,
                 max_connections: int = 256) -> None:
        self.name = name
        self.config = config
        self.base_url = config.base_url.rstrip("/")
        if api_key is None and config.api_key_env:
            api_key = os.environ.get(config.api_key_env)
            if not api_key:
                log.warning("provider %s: environment variable %s is not set; requests will "
                            "be sent without an API key", name, config.api_key_env)
        self.api_key = api_key
        self._transport = transport
        self._url = httpx.URL(self.base_url + "/chat/completions")
        self._headers = {"Content-Type": "application/json", "Accept": "application/json",
                         **({"Authorization": f"Bearer {api_key}"} if api_key else {})}
        self._max_connections = max_connections
        self._clients: dict[asyncio.AbstractEventLoop, httpx.AsyncClient] = {}
        self._dec = msgspec.json.Decoder(_Completion)
        self._enc = msgspec.json.Encoder()

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            t = self.config.timeouts
            limits = httpx.Limits(max_connections=self._max_connections,
                                  max_keepalive_connections=self._max_connections)
            transport = self._transport or AiohttpTransport(limits=limits)
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            client = self._clients[loop] = httpx.AsyncClient(
                base_url=self.base_url, transport=transport, headers=headers,
                # Backstops; the precise budgets are enforced with asyncio timeouts.
                timeout=httpx.Timeout(connect=t.connect_s, read=max(t.first_byte_s, t.idle_s),
                                      write=t.total_s, pool=t.total_s))
            client._cookies = _NoCookies()
        return client

    def _body(self, call: ProviderCall, stream: bool) -> bytes:
        body: dict[str, Any] = {
            "model": call.model,
            "messages": [{"role": m.role, "content": m.content} for m in call.messages],
            "stream": stream,
        }
        if call.max_tokens is not None:
            body["max_tokens"] = call.max_tokens
        if call.temperature is not None:
            body["temperature"] = call.temperature
        if call.response_format is not None:
            body["response_format"] = call.response_format
        if call.extra_body:
            body.update(call.extra_body)
        if stream:
            body["stream_options"] = {"include_usage": True}
        return self._enc.encode(body)

    def _budget(self, call: ProviderCall) -> float:
        total = self.config.timeouts.total_s
        return min(total, call.timeout_s) if call.timeout_s is not None else total

    async def _send(self, call: ProviderCall, stream: bool) -> httpx.Response:
        """Send and wait for the response headers (the first byte), within budget."""
        client = self._http()
        # Built directly (not client.build_request): nothing to merge, and it is cheaper.
        req = httpx.Request("POST", self._url, content=self._body(call, stream),
                            headers=self._headers)
        first_byte = min(self.config.timeouts.first_byte_s, self._budget(call))
        try:
            async with asyncio.timeout(first_byte):
                return await client.send(req, stream=True)
        except TimeoutError:
            raise ProviderTimeoutError(
                f"{self.name}: no response within {first_byte:.3g}s", provider=self.name) from None
        except httpx.TimeoutException as exc:
            raise ProviderTimeoutError(f"{self.name}: {describe(exc)}",
                                       provider=self.name) from exc
        except httpx.HTTPError as exc:
            raise ProviderServerError(f"{self.name}: connection failed: {exc}",
                                      provider=self.name) from exc

    async def _read_body(self, resp: httpx.Response) -> bytes:
        """The whole body; the caller's timeout bounds it."""
        try:
            return await resp.aread()
        except httpx.HTTPError as exc:
            raise ProviderServerError(f"{self.name}: response cut: {exc}",
                                      provider=self.name) from exc
        finally:
            await resp.aclose()

    async def complete(self, call: ProviderCall) -> ProviderResponse:
        t0 = time.perf_counter()
        budget = self._budget(call)
        try:
            async with asyncio.timeout(budget):
                resp = await self._send(call, stream=False)
                body = await self._read_body(resp)
        except TimeoutError:
            raise ProviderTimeoutError(f"{self.name}: total budget {budget:.3g}s exceeded",
                                       provider=self.name) from None
        if resp.status_code >= 400:
            raise translate_status(self.name, resp.status_code, body, resp.headers)
        latency_ms = (time.perf_counter() - t0) * 1000.0
        try:
            data = self._dec.decode(body)
            choice = data.choices[0]
            text = (choice.get("message") or {}).get("content") or ""
            finish = choice.get("finish_reason") or "stop"
        except (msgspec.DecodeError, IndexError, AttributeError) as exc:
            raise ProviderServerError(f"{self.name}: malformed completion: {exc}",
                                      provider=self.name) from exc
        return _response(call, text, str(finish), data.usage or {}, latency_ms)

    async def stream(self, call: ProviderCall) -> AsyncIterator[StreamChunk]:
        """Yield text deltas, then one final chunk with usage and finish reason.

        A stream that ends without ``[DONE]`` (or a finish reason) raises
        ProviderStreamError: a cut stream is an error, never a quiet success.
        """
        t0 = time.perf_counter()
        budget = self._budget(call)
        resp = await self._send(call, stream=True)
        if resp.status_code >= 400:
            try:
                async with asyncio.timeout(budget):
                    body = await self._read_body(resp)
            except TimeoutError:
                raise ProviderTimeoutError(f"{self.name}: error body not complete within "
                                           f"{budget:.3g}s", provider=self.name) from None
            raise translate_status(self.name, resp.status_code, body, resp.headers)
        texts: list[str] = []
        usage: dict[str, Any] = {}
        finish: str | None = None
        done = False
        idle = self.config.timeouts.idle_s
        first = min(self.config.timeouts.first_byte_s, budget)
        events = EventSource(resp).aiter_sse()
        try:
            while True:
                remaining = budget - (time.perf_counter() - t0)
                wait = min(first if not texts and finish is None else idle, remaining)
                if wait <= 0:
                    raise ProviderTimeoutError(f"{self.name}: stream exceeded {budget:.3g}s",
                                               provider=self.name)
                try:
                    async with asyncio.timeout(wait):
                        sse = await anext(events)
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise ProviderTimeoutError(f"{self.name}: stream idle for {wait:.3g}s",
                                               provider=self.name) from None
                if sse.data.strip() == "[DONE]":
                    done = True
                    break
                try:
                    chunk = msgspec.json.decode(sse.data)
                except msgspec.DecodeError as exc:
                    raise ProviderStreamError(f"{self.name}: bad stream event: {exc}",
                                              provider=self.name) from exc
                if isinstance(chunk, dict) and "error" in chunk:
                    raise ProviderStreamError(f"{self.name}: upstream stream error: "
                                              f"{chunk['error']}", provider=self.name)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    delta = (choice.get("delta") or {}).get("content")
                    if delta:
                        texts.append(delta)
                        yield StreamChunk(delta=delta)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
        except httpx.HTTPError as exc:
            raise ProviderStreamError(f"{self.name}: stream cut: {exc}",
                                      provider=self.name) from exc
        finally:
            await resp.aclose()
        if not done:
            raise ProviderStreamError(f"{self.name}: stream ended before [DONE]",
                                      provider=self.name)
        yield StreamChunk(delta="", final=_response(
            call, "".join(texts), finish or "stop", usage, (time.perf_counter() - t0) * 1000))

    async def aclose(self) -> None:
        """Close this event loop's client."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()


