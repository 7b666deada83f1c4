"""Micro-batching: hold compatible requests for a short window, send them as one call.

Requests of the same (task type, strategy) wait up to ``window_ms`` or until ``max_batch``
are queued, then go upstream as one call that shares the instructions: numbered items in,
a JSON array of answers out. Each answer goes back to its caller; an item whose answer
cannot be found fails alone (``BatchItemError``) and its caller falls back. Tokens and
cost are apportioned by each item's share of the prompt and of the answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from conductor.errors import BatchItemError
from conductor.providers.base import (
    ProviderCall,
    ProviderResponse,
    estimate_tokens,
)
from conductor.types import Message

BATCH_INSTRUCTIONS = (
    "You will receive {n} numbered items. Answer each item independently, following the "
    "instructions above. Reply with only a JSON array of exactly {n} elements, where element "
    "i is the answer to item i: a string, or a JSON value when the item asks for JSON. "
    "No text before or after the array."
)

BATCH_FRAMING_OUT_TOKENS = 8  # per item: the array's quotes, commas and brackets


def batch_framing_tokens(max_batch: int) -> int:
    """The most input tokens batching adds to one item: the instructions (charged whole to
    an item that goes alone) and its item header."""
    return estimate_tokens(BATCH_INSTRUCTIONS.format(n=max_batch)) + estimate_tokens(
        f"### Item {max_batch}\n") + 12  # + the two messages' framing, and rounding


def build_batch_call(calls: list[ProviderCall]) -> ProviderCall:
    """One call carrying every item; shared system instructions are sent once."""
    systems = [tuple(m.content for m in c.messages if m.role == "system") for c in calls]
    shared = systems[0] if all(s == systems[0] for s in systems) else ()
    n = len(calls)
    parts = []
    for i, c in enumerate(calls, 1):
        lines = [m.content if m.role == "user" else f"[{m.role}] {m.content}"
                 for m in c.messages if not (m.role == "system" and shared)]
        parts.append(f"### Item {i}\n" + "\n".join(lines))
    system = "\n\n".join([*shared, BATCH_INSTRUCTIONS.format(n=n)])
    max_tokens = None
    if all(c.max_tokens is not None for c in calls):
        max_tokens = sum(c.max_tokens or 0 for c in calls) + BATCH_FRAMING_OUT_TOKENS * n
    first = calls[0]
    return ProviderCall(
        model=first.model, task_type=first.task_type, batched=True, batch_items=n,
        messages=(Message(role="system", content=system),
                  Message(role="user", content="\n\n".join(parts))),
        max_tokens=max_tokens, temperature=first.temperature, metadata=first.metadata,
        extra_body=first.extra_body,  # a batch shares its items' sampling parameters
        timeout_s=min((c.timeout_s for c in calls if c.timeout_s is not None), default=None))


def parse_batch_answers(text: str, n: int) -> list[str | None]:
    """The n answers in a batched reply; None where an item's answer is missing."""
    body = text.strip()
    if body.startswith("```"):
        body = body.strip("`")
        body = body[body.find("\n") + 1:] if "\n" in body else body
    start, end = body.find("["), body.rfind("]")
    answers: Any = None
    if start != -1 and end > start:
        try:
            answers = msgspec.json.decode(body[start:end + 1])
        except msgspec.DecodeError:
            answers = None
    if not isinstance(answers, list):
        return [None] * n
    out: list[str | None] = []
    for i in range(n):
        if i >= len(answers) or answers[i] is None:
            out.append(None)
        elif isinstance(answers[i], str):
            out.append(answers[i])
        else:
            out.append(msgspec.json.encode(answers[i]).decode())
    return out


def split_response(resp: ProviderResponse, calls: list[ProviderCall], shared_tokens: int,
                   waited_ms: list[float]) -> list[ProviderResponse | BatchItemError]:
    """Per-item responses with tokens apportioned; errors for unparseable items."""
    n = len(calls)
    answers = parse_batch_answers(resp.text, n)
    own_in = [sum(estimate_tokens(m.content) + 4 for m in c.messages if m.role != "system")
              for c in calls]
    denom_in = sum(own_in) + shared_tokens
    own_out = [estimate_tokens(a) if a is not None else 0 for a in answers]
    denom_out = sum(own_out) or 1
    out: list[ProviderResponse | BatchItemError] = []
    for i, answer in enumerate(answers):
        if answer is None:
            out.append(BatchItemError(f"batch answer {i + 1} of {n} missing or unparseable",
                                      provider="batch"))
            continue
        extra = {k: (v[i] if isinstance(v, list) and len(v) == n else v)
                 for k, v in resp.extra.items()}
        out.append(ProviderResponse(
            text=answer,
            input_tokens=round(resp.input_tokens * (own_in[i] + shared_tokens / n) / denom_in),
            output_tokens=round(resp.output_tokens * own_out[i] / denom_out),
            latency_ms=resp.latency_ms + waited_ms[i], finish_reason=resp.finish_reason,
            usage_estimated=resp.usage_estimated, extra={**extra, "batch_size": n}))
    return out


class MicroBatcher:
    """Collects calls for one (task type, strategy) and sends them in batches.

    ``send`` makes the upstream call (with retries); it is given the combined call.
    ``simulated_wait``: the upstream runs on simulated time (the demo world fast-forwarding),
    so the window is not waited for real: what is queued in the same loop turn goes out
    together and each item is charged the whole window.
    """

    def __init__(self, send: Callable[[ProviderCall], Awaitable[ProviderResponse]], *,
                 window_ms: float, max_batch: int, simulated_wait: bool = False) -> None:
        self.send = send
        self.window_s = window_ms / 1000.0
        self.max_batch = max_batch
        self.simulated_wait = simulated_wait
        self._items: list[tuple[ProviderCall, asyncio.Future[ProviderResponse], float]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.batches_sent = 0

    async def submit(self, call: ProviderCall) -> ProviderResponse:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[ProviderResponse] = loop.create_future()
        self._items.append((call, fut, time.perf_counter()))
        if len(self._items) >= self.max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = loop.call_later(0.0 if self.simulated_wait else self.window_s,
                                          self._flush)
        return await fut

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._items = self._items, []
        if items:
            task = asyncio.get_running_loop().create_task(self._run(items))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _run(self, items: list[tuple[ProviderCall, asyncio.Future[ProviderResponse],
                                           float]]) -> None:
        calls = [c for c, _, _ in items]
        futures = [f for _, f, _ in items]
        started = time.perf_counter()
        waited = [self.window_s * 1000.0 if self.simulated_wait else (started - t) * 1000.0
                  for _, _, t in items]
        self.batches_sent += 1
        combined = build_batch_call(calls)
        try:
            resp = await self.send(combined)
        except BaseException as exc:  # every caller learns of the failure
            for f in futures:
                if not f.done():
                    f.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        shared = estimate_tokens(combined.messages[0].content) + 4
        for f, result in zip(futures, split_response(resp, calls, shared, waited), strict=True):
            if f.done():
                continue
            if isinstance(result, BaseException):
                f.set_exception(result)
            else:
                f.set_result(result)
