"""LLM-as-judge: rubrics per task type, robust score parsing, sampling, background workers.

The judge grades one answer at a time and replies "Score: N" on a 1-10 scale, mapped to
[0, 1] as (N - 1) / 9. A reply without a score is a judge failure, never a zero. ``Judge``
calls its model through a send function (the router gives it the upstream path, with
retries and the model's circuit breaker) and returns a typed ``JudgeResult``. Judging runs
off the request path: a bounded queue feeds a fixed number of workers on their own event
loop; a full queue drops the job and counts it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable

from msgspec import Struct

from conductor.config import Settings
from conductor.errors import JudgeError, ProviderError, describe
from conductor.providers.base import ProviderCall, ProviderResponse
from conductor.types import CallRecord, Message

log = logging.getLogger("conductor.judge")

RUBRICS = {
    "classify": "Is the label correct for the input, and is it exactly one of the allowed "
                "labels with nothing else? 10 = correct label, 1 = wrong or not a label.",
    "summarize": "Is the summary faithful to the source (no invented facts) and does it cover "
                 "its main points concisely? 10 = faithful and complete, 1 = wrong or empty.",
    "chat": "Does the reply help the customer: correct, actionable, polite and on topic? "
            "10 = fully resolves it, 1 = unhelpful, wrong or rude.",
    "generate_long": "Is the text accurate, well organised, fluent and does it follow every "
                     "instruction (length, tone, content)? 10 = publishable, 1 = unusable.",
    "extract_json": "Does the JSON contain every requested field with the right values from "
                    "the input and nothing invented? 10 = complete and exact, 1 = unusable.",
}
DEFAULT_RUBRIC = ("Does the answer correctly and completely do what the request asks? "
                  "10 = perfect, 1 = useless.")

JUDGE_MAX_TOKENS = 16  # "Score: N" and a little slack
JUDGE_PROMPT_TOKENS_BOUND = 300  # rubric and framing around the judged texts, at most

# A GBNF grammar that makes a llama.cpp judge reply with the score line and nothing else.
SCORE_GRAMMAR = 'root ::= "Score: " ("10" | [1-9])'

_SCORE = re.compile(r"(?:score|rating)\s*(?:\*\*)?\s*[:=]?\s*(?:\*\*)?\s*(10|[1-9])(?![0-9.])"
                    r"(?:\s*(?:/|out of)\s*10)?", re.IGNORECASE)
_BARE = re.compile(r"^\s*(10|[1-9])\s*(?:/\s*10)?\s*\.?\s*$")


def judge_messages(task_type: str, request_text: str, answer: str,
                   max_chars: int = 8000) -> tuple[Message, ...]:
    rubric = RUBRICS.get(task_type, DEFAULT_RUBRIC)
    return (
        Message(role="system", content=(
            "You are a strict grader. Grade the ANSWER to the REQUEST on a 1-10 scale with "
            f"this rubric: {rubric} Judge the content, not its length. Reply with one line: "
            "'Score: N'.")),
        Message(role="user", content=(
            f"REQUEST:\n{request_text[:max_chars]}\n\nANSWER:\n{answer[:max_chars]}\n\n"
            "Score:")),
    )


def parse_score(reply: str) -> int:
    """The 1-10 score in a judge reply; tolerates chatter, markdown and 'N/10'.

    The last "Score: N" wins (judges often restate it at the end); a bare "N" or "N/10"
    reply is accepted. Raises JudgeError when there is no score.
    """
    matches = _SCORE.findall(reply)
    if matches:
        return int(matches[-1])
    bare = _BARE.match(reply)
    if bare:
        return int(bare.group(1))
    raise JudgeError(f"no score in judge reply: {reply[:200]!r}")


def score_to_unit(score: int) -> float:
    return (score - 1) / 9.0


class JudgeResult(Struct, kw_only=True, frozen=True):
    """One grading: the score in [0, 1] (None when the call failed or the reply had no
    score, with ``error`` saying which), the call it took, and whether the judge graded an
    answer of its own model."""

    score: float | None
    call: CallRecord
    raw_reply: str | None = None
    self_graded: bool = False
    error: str | None = None


class Judge:
    """Grades answers with one configured strategy's model.

    Args:
        strategy: the judge strategy's name (its calls are recorded under it).
        model: that strategy's configured model.
        upstream_name: the model's name at the provider.
        send: makes the call (the upstream path: retries, circuit breaker).
        cost: what a response cost at the model's prices.
        use_grammar: send a GBNF grammar so a llama.cpp judge always replies "Score: N".
    """

    def __init__(self, strategy: str, model: str, upstream_name: str,
                 send: Callable[[ProviderCall], Awaitable[ProviderResponse]],
                 cost: Callable[[ProviderResponse], float], *, use_grammar: bool = False) -> None:
        self.strategy = strategy
        self.model = model
        self.upstream_name = upstream_name
        self.send = send
        self.cost = cost
        self.use_grammar = use_grammar

    @classmethod
    def from_settings(cls, settings: Settings, send: Callable[
            [str, ProviderCall, float | None], Awaitable[ProviderResponse]],
                      cost: Callable[[str, ProviderResponse], float]) -> Judge | None:
        """The configured judge (None when ``[judge] strategy`` is unset). ``send(model,
        call, deadline)`` and ``cost(strategy, response)`` are the upstream path's."""
        name = settings.judge.strategy
        if name is None:
            return None
        model = settings.strategies[name].model
        return cls(name, model, settings.models[model].upstream_name or model,
                   lambda call: send(model, call, None), lambda resp: cost(name, resp),
                   use_grammar=settings.judge.use_grammar)

    async def grade(self, task_type: str, request_text: str, answer: str,
                    answer_model: str) -> JudgeResult:
        call = ProviderCall(
            model=self.upstream_name, task_type=task_type, max_tokens=JUDGE_MAX_TOKENS,
            temperature=0.0, extra_body={"grammar": SCORE_GRAMMAR} if self.use_grammar else {},
            messages=judge_messages(task_type, request_text, answer))
        self_graded = answer_model == self.model
        try:
            resp = await self.send(call)
        except ProviderError as exc:
            error = describe(exc)
            return JudgeResult(score=None, self_graded=self_graded, error=error,
                               call=CallRecord(strategy=self.strategy, model=self.model,
                                               role="judge", error=error))
        record = CallRecord(strategy=self.strategy, model=self.model, role="judge",
                            latency_ms=resp.latency_ms, input_tokens=resp.input_tokens,
                            output_tokens=resp.output_tokens, cost_usd=self.cost(resp))
        try:
            score = score_to_unit(parse_score(resp.text))
        except JudgeError as exc:
            return JudgeResult(score=None, call=record, raw_reply=resp.text[:500],
                               self_graded=self_graded, error=f"JudgeError: {exc}")
        return JudgeResult(score=score, call=record, raw_reply=resp.text[:500],
                           self_graded=self_graded)


class JudgeSampler:
    """Which answers to judge: ``base_rate`` of a task type's traffic, more where the bandit
    is uncertain (rate x std / reference std, capped at 1), within a per-hour call budget."""

    def __init__(self, *, max_calls_per_hour: int, reference_std: float = 0.02,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_calls_per_hour = max_calls_per_hour
        self.reference_std = reference_std
        self.clock = clock
        self._calls: deque[float] = deque()
        self.budget_skipped = 0

    def probability(self, base_rate: float, posterior_std: float) -> float:
        if base_rate <= 0:
            return 0.0
        boost = max(1.0, posterior_std / self.reference_std)
        return min(1.0, base_rate * boost)

    def take(self, probability: float, u: float) -> bool:
        """Sample with ``probability`` (``u`` uniform in [0, 1)), within the hourly budget."""
        if u >= probability:
            return False
        now = self.clock()
        while self._calls and now - self._calls[0] > 3600.0:
            self._calls.popleft()
        if len(self._calls) >= self.max_calls_per_hour:
            self.budget_skipped += 1
            return False
        self._calls.append(now)
        return True


class JudgeRunner:
    """A bounded queue and ``workers`` tasks on a dedicated thread's event loop.

    ``submit`` never blocks: a full queue drops the job (counted in ``dropped``). Job
    failures are counted in ``failed`` and logged; they never reach the caller.
    """

    def __init__(self, *, workers: int = 2, queue_size: int = 1000) -> None:
        self.workers = workers
        self.queue_size = queue_size
        self.dropped = 0
        self.failed = 0
        self.done = 0
        self.submitted = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: asyncio.Queue[Callable[[], Awaitable[None]] | None] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self._on_close: list[Callable[[], Awaitable[None]]] = []

    def start(self) -> None:
        if self._thread is not None:
            return

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            # Unbounded here: the bound (queue_size waiting + workers running) is enforced
            # in submit(), on the caller's thread, where a full queue must be known at once.
            self._queue = asyncio.Queue()
            tasks = [loop.create_task(self._worker()) for _ in range(self.workers)]
            self._started.set()
            loop.run_until_complete(asyncio.gather(*tasks))
            for hook in self._on_close:
                try:
                    loop.run_until_complete(hook())
                except Exception:  # closing must not fail the shutdown
                    log.exception("judge loop close hook failed")
            loop.close()

        self._thread = threading.Thread(target=run, name="conductor-judge", daemon=True)
        self._thread.start()
        self._started.wait(10)

    def on_close(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` on the judge loop when it stops (to close per-loop clients)."""
        self._on_close.append(hook)

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            job = await self._queue.get()
            if job is None:
                return
            try:
                await job()
                self.done += 1
            except Exception as exc:  # counted; never reaches a caller
                self.failed += 1
                log.warning("judge job failed: %s", exc)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._idle.notify_all()

    def submit(self, job: Callable[[], Awaitable[None]]) -> bool:
        """Queue a job; False (and counted) when the queue is full."""
        self.start()
        assert self._loop is not None and self._queue is not None
        queue = self._queue
        with self._lock:
            if self._in_flight >= self.queue_size + self.workers:
                self.dropped += 1
                return False
            self._in_flight += 1
            self.submitted += 1
        self._loop.call_soon_threadsafe(queue.put_nowait, job)
        return True

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every submitted job has finished (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._in_flight > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def close(self, timeout: float = 10.0) -> None:
        if self._thread is None or self._loop is None or self._queue is None:
            return
        self.wait_idle(timeout)
        for _ in range(self.workers):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, None)
        self._thread.join(timeout)
        self._thread = None
