"""Providers and execution over real HTTP on 127.0.0.1 against the fake upstream."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import msgspec
import pytest

from conductor import Conductor
from conductor.config import settings_from_dict
from conductor.errors import (
    CircuitOpenError,
    InvalidRequestError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderRateLimitedError,
    ProviderServerError,
    ProviderStreamError,
    ProviderTimeoutError,
    RateLimitedError,
)
from conductor.execution.executor import Plan
from conductor.providers.base import ProviderCall
from conductor.providers.openai import OpenAIProvider, parse_retry_after
from conductor.rate_limiter import RateLimitConfig, RateLimiter, WindowLedger
from conductor.testing import FakeUpstream
from conductor.types import CompletionRequest, CompletionResult, Message, Outcome, Reward
from tests.integration.conftest import fake_settings

T = TypeVar("T")

Closing = Callable[[T], T]


@pytest.fixture
async def closing() -> AsyncIterator[Closing[Any]]:
    """Registers a Conductor or provider to close after the test, passed or failed: a
    failed test must not leak an open HTTP connector into the ones after it."""
    opened: list[Any] = []

    def keep(obj: T) -> T:
        opened.append(obj)
        return obj

    yield keep
    for obj in reversed(opened):
        await obj.aclose()


CALL = ProviderCall(model="cheap", messages=(Message(role="user", content="Say hi"),))


def _provider(up: FakeUpstream, **kw: Any) -> OpenAIProvider:
    s = fake_settings(up.base_url, **kw)
    return OpenAIProvider("fake", s.providers["fake"])


async def test_completion_uses_upstream_usage_and_prices(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.answer = "hello there, friend"
    c = closing(Conductor(fake_settings(upstream.base_url), seed=1, evaluators=[]))
    r = await c.acomplete("Say hi", task_type="chat", strategy="direct-strong")
    assert r.text == "hello there, friend"
    assert upstream.requests[-1]["model"] == "strong"
    assert upstream.requests[-1]["messages"] == [{"role": "user", "content": "Say hi"}]
    prompt_tokens = len("Say hi") // 4 + 4
    completion_tokens = len("hello there, friend") // 4
    assert (r.outcome.input_tokens, r.outcome.output_tokens) == (prompt_tokens, completion_tokens)
    assert r.outcome.cost_usd == pytest.approx((prompt_tokens * 10 + completion_tokens * 30) / 1e6)
    assert not r.outcome.cost_estimated


async def test_missing_usage_is_estimated_and_marked(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.usage = False
    upstream.behaviour.answer = "x" * 40
    c = closing(Conductor(fake_settings(upstream.base_url), seed=1, evaluators=[]))
    r = await c.acomplete("Say hi", task_type="chat", strategy="direct-cheap")
    assert r.outcome.cost_estimated
    assert r.outcome.output_tokens == 10  # 40 characters / 4
    assert r.outcome.cost_usd == pytest.approx((r.outcome.input_tokens * 1 + 10 * 2) / 1e6)


@pytest.mark.parametrize("budget", ["first_byte_s", "total_s"])
async def test_an_upstream_that_never_answers_fails_on_time(
        upstream: FakeUpstream, closing: Closing[Any],
                                                            budget: str) -> None:
    upstream.behaviour.hang = True
    kw = {"first_byte_s": 0.6, "total_s": 10.0} if budget == "first_byte_s" else {
        "first_byte_s": 10.0, "total_s": 0.6}
    p = closing(_provider(upstream, **kw))
    t0 = time.perf_counter()
    with pytest.raises(ProviderTimeoutError):
        await p.complete(CALL)
    elapsed = time.perf_counter() - t0
    # Not before its budget; and it is this budget that fired, not the other one (10 s).
    assert 0.59 <= elapsed < 5.0, elapsed


async def test_a_429_burst_is_retried_after_retry_after(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.fail_statuses = [429, 429]
    upstream.behaviour.retry_after = "0.3"
    c = closing(Conductor(fake_settings(upstream.base_url, attempts=3), seed=1, evaluators=[]))
    t0 = time.perf_counter()
    r = await c.acomplete("hi", task_type="chat", strategy="direct-cheap")
    assert time.perf_counter() - t0 >= 0.6
    assert len(upstream.requests) == 3
    assert r.text == "fake answer" and c.stats().retries == 2


async def test_errors_are_translated_with_the_upstream_message(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    p = closing(_provider(upstream))
    upstream.behaviour.fail_statuses = [500]
    with pytest.raises(ProviderServerError, match="upstream 500: upstream is overloaded"):
        await p.complete(CALL)
    upstream.behaviour.fail_statuses = [401]
    upstream.behaviour.fail_body = '{"error": {"message": "Incorrect API key provided"}}'
    with pytest.raises(ProviderAuthError, match="Incorrect API key provided"):
        await p.complete(CALL)
    upstream.behaviour.fail_statuses = [429]
    upstream.behaviour.retry_after = "7"
    with pytest.raises(ProviderRateLimitedError) as info:
        await p.complete(CALL)
    assert info.value.retry_after_s == 7.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0


async def test_auth_errors_are_not_retried(upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.fail_statuses = [401, 401, 401]
    c = closing(Conductor(fake_settings(upstream.base_url), seed=1, evaluators=[]))
    with pytest.raises(ProviderAuthError):
        await c.acomplete("hi", task_type="chat", strategy="direct-cheap")
    assert len(upstream.requests) == 1


async def test_retries_stop_at_the_request_deadline(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.fail_statuses = [503] * 10
    upstream.behaviour.retry_after = None
    data = fake_settings(upstream.base_url, attempts=10, backoff_s=0.2)
    fake = data.providers["fake"]  # a breaker that never opens: only the deadline stops it
    data = msgspec.structs.replace(data, providers={"fake": msgspec.structs.replace(
        fake, circuit=msgspec.structs.replace(fake.circuit, consecutive_failures=100,
                                              min_calls=100))})
    c = closing(Conductor(data, seed=1, evaluators=[]))
    # The retries stop at the deadline: either before a backoff that would pass it (the
    # caller hears the 503) or when it fires mid-wait (a 504 naming the last 503); which
    # one depends on how busy the machine is.
    with pytest.raises((ProviderServerError, ProviderTimeoutError)) as info:
        await c.acomplete("hi", task_type="chat", strategy="direct-cheap", max_latency_ms=500)
    assert "503" in str(info.value)
    # Ten attempts need nine waits of up to 0.2, 0.4, 0.8, 1, 1... s: far past 500 ms.
    assert 1 <= len(upstream.requests) < 10


async def test_retries_that_open_the_circuit_raise_the_upstreams_error(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    # Three 503s in a row open the circuit (fake_settings); the fourth attempt is not sent
    # and the caller hears the upstream's 503, not "circuit open".
    upstream.behaviour.fail_statuses = [503] * 10
    upstream.behaviour.retry_after = None
    c = closing(Conductor(fake_settings(upstream.base_url, attempts=10, backoff_s=0.001),
                          seed=1, evaluators=[]))
    with pytest.raises(ProviderServerError) as info:
        await c.acomplete("hi", task_type="chat", strategy="direct-cheap")
    assert info.value.status == 503
    assert len(upstream.requests) == 3
    assert c.health.breaker("cheap").state == "open"


async def test_streaming_yields_deltas_and_usage(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.answer = "one two three four five six"
    p = closing(_provider(upstream))
    chunks = [c async for c in p.stream(CALL)]
    deltas = [c.delta for c in chunks if c.final is None]
    assert len(deltas) >= 3 and "".join(deltas) == "one two three four five six"
    final = chunks[-1].final
    assert final is not None and not final.usage_estimated and final.output_tokens == 6


async def test_a_stream_cut_midway_is_an_error(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.answer = "one two three four five six"
    upstream.behaviour.stream_cut_after = 2
    p = closing(_provider(upstream))
    got: list[str] = []
    with pytest.raises(ProviderStreamError):
        async for c in p.stream(CALL):
            got.append(c.delta)
    assert got and "".join(got) != "one two three four five six"


async def test_three_failures_open_the_circuit_and_the_policy_avoids_it(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.fail_models = {"cheap"}
    c = closing(Conductor(fake_settings(upstream.base_url, attempts=1), seed=1, evaluators=[]))
    for _ in range(3):
        with pytest.raises(ProviderServerError):
            await c.acomplete("hi", task_type="chat", strategy="direct-cheap")
    assert c.breaker("cheap").state == "open"
    assert {"direct-cheap", "batch-cheap", "verified"} <= c.unavailable()
    before = len(upstream.requests)
    for _ in range(30):
        r = await c.acomplete("hi", task_type="chat", min_quality=0.5)
        assert r.decision.strategy == "direct-strong"
    assert all(req["model"] == "strong" for req in upstream.requests[before:])
    assert c.stats().circuits_opened == 1


async def test_a_half_open_circuit_lets_exactly_one_trial_through(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    data = msgspec.to_builtins(fake_settings(upstream.base_url, attempts=1))
    data["providers"]["fake"]["circuit"]["cooldown_s"] = 0.3
    c = closing(Conductor(settings_from_dict(data), seed=1, evaluators=[]))
    upstream.behaviour.fail_models = {"cheap"}
    for _ in range(3):
        with pytest.raises(ProviderServerError):
            await c.acomplete("hi", task_type="chat", strategy="direct-cheap")
    assert c.breaker("cheap").state == "open"
    await asyncio.sleep(0.35)  # the cooldown passes (only so the state can change)
    assert c.breaker("cheap").state == "half_open"
    upstream.behaviour.fail_models = set()
    upstream.behaviour.latency_s = 0.3  # the trial is still in flight while the rest arrive
    before = len(upstream.requests)
    results = await asyncio.gather(*(c.acomplete("hi", task_type="chat", strategy="direct-cheap")
                                     for _ in range(10)), return_exceptions=True)
    assert len(upstream.requests) - before == 1  # exactly one trial reached the upstream
    ok = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, CircuitOpenError)]
    assert len(ok) == 1 and len(refused) == 9
    assert c.breaker("cheap").state == "closed"  # the trial succeeded
    upstream.behaviour.latency_s = 0.0
    again = await asyncio.gather(*(c.acomplete("hi", task_type="chat", strategy="direct-cheap")
                                   for _ in range(5)))
    assert len(again) == 5


def _echo_batch(body: dict[str, Any]) -> str:
    prompt = body["messages"][-1]["content"]
    items = re.findall(r"### Item (\d+)\n(.*?)(?=\n\n### Item |\Z)", prompt, flags=re.S)
    if body["messages"][0]["role"] == "system" and "numbered items" in body["messages"][0][
            "content"]:
        return msgspec.json.encode([f"echo {text.strip()}" for _, text in items]).decode()
    return "direct " + prompt


async def test_a_batch_of_ten_is_one_upstream_call_answering_the_right_callers(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.answer = _echo_batch
    c = closing(Conductor(fake_settings(upstream.base_url, window_ms=2000, max_batch=10), seed=1,
                  evaluators=[]))
    prompts = [f"question number {i}" for i in range(10)]
    results = await asyncio.gather(*(c.acomplete(p, task_type="classify",
                                                 strategy="batch-cheap") for p in prompts))
    assert len(upstream.requests) == 1  # max_batch reached: sent without waiting the window
    assert [r.text for r in results] == [f"echo {p}" for p in prompts]
    total_in = sum(r.outcome.input_tokens for r in results)
    upstream_usage_in = sum(len(m["content"]) // 4 + 4 for m in upstream.requests[0]["messages"])
    assert abs(total_in - upstream_usage_in) <= 10  # apportioned, up to rounding
    for r in results:  # the batch discount applies to each share
        assert r.outcome.cost_usd == pytest.approx(
            (r.outcome.input_tokens * 1 + r.outcome.output_tokens * 2) / 1e6 * 0.5)


async def test_an_unparseable_batch_item_falls_back_alone(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    def short_array(body: dict[str, Any]) -> str:
        if "numbered items" in body["messages"][0]["content"]:
            return '["first answer", "second answer"]'  # three items were sent
        return "direct answer"

    upstream.behaviour.answer = short_array
    # Only the batch strategy and its direct twin (twice as dear) serve this task type.
    tt = {"classify": {"strategies": ["batch-cheap", "direct-cheap"], "min_quality": 0.01}}
    c = closing(Conductor(fake_settings(upstream.base_url, window_ms=200, max_batch=3,
                                        task_types=tt), seed=1, evaluators=[]))
    results = await asyncio.gather(*(c.acomplete(f"item {i}", task_type="classify")
                                     for i in range(3)))
    assert [r.decision.strategy for r in results] == ["batch-cheap"] * 3
    batched = [r for r in results if r.outcome.strategy == "batch-cheap"]
    fell_back = [r for r in results if r.outcome.fallback_used]
    assert [r.text for r in batched] == ["first answer", "second answer"]
    assert len(fell_back) == 1 and fell_back[0].text == "direct answer"
    assert fell_back[0].outcome.fallback_chain == ("batch-cheap", "direct-cheap")
    assert "BatchItemError" in (fell_back[0].outcome.calls[0].error or "")


class _BadDraftEvaluator:
    """Scores an answer 0 when it says it is a bad draft (a plug-in heuristic)."""

    name = "bad-draft"
    task_types = None

    def evaluate(self, request: CompletionRequest, outcome: Outcome,
                 extra: dict[str, Any]) -> Reward | None:
        return Reward(request_id=outcome.request_id, source="heuristic",
                      score=0.0 if "bad draft" in outcome.text else 1.0)


async def test_a_verified_draft_below_the_score_escalates_and_both_costs_count(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.answer = lambda b: "a bad draft" if b["model"] == "cheap" else "good"
    c = closing(Conductor(fake_settings(upstream.base_url), seed=1,
                          evaluators=[_BadDraftEvaluator()]))
    r = await c.acomplete("Write it", task_type="chat", strategy="verified")
    assert r.text == "good" and r.outcome.escalated
    assert [(x.role, x.model) for x in r.outcome.calls] == [("draft", "cheap"),
                                                            ("escalation", "strong")]
    draft, final = r.outcome.calls
    assert draft.cost_usd > 0 and final.cost_usd > 0
    assert r.outcome.cost_usd == pytest.approx(draft.cost_usd + final.cost_usd)
    upstream.behaviour.answer = "fine"
    r2 = await c.acomplete("Write it", task_type="chat", strategy="verified")
    assert not r2.outcome.escalated and len(r2.outcome.calls) == 1


async def test_a_verified_draft_is_the_answer_when_the_escalation_runs_out_of_time(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    """The draft scores below the bar, the escalation's model never answers: at the
    request's deadline the draft is served (the best answer there is), not an error."""
    upstream.behaviour.answer = "a bad draft"
    upstream.behaviour.hang_models = {"strong"}
    c = closing(Conductor(fake_settings(upstream.base_url, first_byte_s=30.0, total_s=60.0),
                          seed=1, evaluators=[_BadDraftEvaluator()]))
    r = await c.acomplete("Write it", task_type="chat", strategy="verified",
                          max_latency_ms=2000)
    assert r.text == "a bad draft" and not r.outcome.escalated and r.outcome.error is None
    assert [body["model"] for body in upstream.requests] == ["cheap", "strong"]
    draft, escalation = r.outcome.calls  # the trace keeps the call that ran out of time
    assert (draft.role, draft.model, draft.error) == ("draft", "cheap", None)
    assert (escalation.role, escalation.model) == ("escalation", "strong")
    assert escalation.error and "Timeout" in escalation.error
    assert r.outcome.cost_usd == pytest.approx(draft.cost_usd)


def _two_direct(up: FakeUpstream) -> Any:
    tt = {"chat": {"strategies": ["direct-cheap", "direct-strong"], "min_quality": 0.01}}
    return Conductor(fake_settings(up.base_url, attempts=1, task_types=tt), seed=1,
                     evaluators=[])


async def test_a_stream_never_switches_model_after_text_has_gone_out(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.answer = "one two three four five six"
    c = closing(_two_direct(upstream))
    stream = c.astream(c.make_request("go", task_type="chat"))
    decision = await anext(stream)
    assert c.decider.fallback_order(decision)  # there is somewhere to fall back to
    upstream.behaviour.stream_cut_after = 2
    deltas: list[str] = []
    with pytest.raises(ProviderStreamError):
        async for item in stream:
            deltas.append(item)
    assert deltas and "".join(deltas) != "one two three four five six"
    assert len(upstream.requests) == 1  # no second model once text went out
    rec = c.log_store.get_request(decision.request_id)
    assert rec.outcome.error and rec.outcome.fallback_chain == (decision.strategy,)


async def test_a_stream_falls_back_before_its_first_delta(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.answer = "one two three four five six"
    c = closing(_two_direct(upstream))
    stream = c.astream(c.make_request("go", task_type="chat"))
    decision = await anext(stream)
    upstream.behaviour.fail_models = {"cheap" if decision.strategy == "direct-cheap"
                                      else "strong"}
    items = [item async for item in stream]
    result = items[-1]
    assert "".join(i for i in items if isinstance(i, str)) == "one two three four five six"
    assert result.outcome.fallback_chain == (decision.strategy, *[
        s for s in ("direct-cheap", "direct-strong") if s != decision.strategy])
    assert [r["model"] for r in upstream.requests] == [
        "cheap" if decision.strategy == "direct-cheap" else "strong",
        "strong" if decision.strategy == "direct-cheap" else "cheap"]


async def test_a_rejected_request_does_not_open_the_circuit(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.fail_statuses = [400] * 6
    upstream.behaviour.fail_body = '{"error": {"message": "context length exceeded"}}'
    c = closing(Conductor(fake_settings(upstream.base_url, attempts=1), seed=1, evaluators=[]))
    for _ in range(6):
        with pytest.raises(ProviderBadRequestError, match="context length exceeded"):
            await c.acomplete("hi", task_type="chat", strategy="direct-cheap")
    assert c.breaker("cheap").state == "closed" and "direct-cheap" not in c.unavailable()


async def test_a_fallback_the_budget_refuses_is_skipped_for_one_that_fits(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    upstream.behaviour.fail_models = {"cheap"}
    c = closing(Conductor(fake_settings(upstream.base_url, attempts=1), seed=1,
                          evaluators=[]))
    asked: list[tuple[str, float]] = []

    async def reserve(cand: str, spent: float) -> None:
        asked.append((cand, spent))
        if cand in refuse:
            raise RateLimitedError(f"{cand} does not fit", retry_after_s=60.0,
                                   limit="max_cost_per_hour_usd")

    request = c.make_request("hi", task_type="chat")
    refuse = {"verified"}
    plan = Plan(request_id="r1", candidates=("direct-cheap", "verified", "direct-strong"),
                before_fallback=reserve)
    attempt = await c.executor.run(request, plan)
    assert attempt.resp is not None and attempt.executed == "direct-strong"
    assert attempt.chain == ["direct-cheap", "direct-strong"]  # verified was never sent
    assert asked == [("verified", 0.0), ("direct-strong", 0.0)]  # the failure cost nothing
    assert [r["model"] for r in upstream.requests] == ["cheap", "strong"]

    refuse = {"verified", "direct-strong"}  # nothing fits: the caller hears the budget
    attempt = await c.executor.run(request, msgspec.structs.replace(plan, request_id="r2"))
    assert attempt.resp is None and isinstance(attempt.failure, RateLimitedError)
    assert str(attempt.failure) == "direct-strong does not fit"

    refuse = {"verified"}  # skipped, then the last one fails upstream: that is the error
    upstream.behaviour.fail_models = {"cheap", "strong"}
    attempt = await c.executor.run(request, msgspec.structs.replace(plan, request_id="r3"))
    assert attempt.resp is None and not isinstance(attempt.failure, RateLimitedError)


class _ThreadRecordingLedger(WindowLedger):
    """This process's ledger, noting which thread settles each reservation."""

    def __init__(self) -> None:
        super().__init__()
        self.settled_on: list[int] = []

    def reconcile(self, reservation_id: int, client_id: str, usd: float) -> None:
        self.settled_on.append(threading.get_ident())
        super().reconcile(reservation_id, client_id, usd)


async def test_an_answered_request_settles_its_reservation_to_what_it_cost(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    """Admission reserves the strategy's upper bound (max_tokens at its price); once the
    answer is learned from, the client's hourly spend is what it actually cost, on the
    Python API's path and on the service's (answered first, settled by the bookkeeping
    thread). Left unsettled, every request would count at its bound."""
    limiter = RateLimiter({"acme": RateLimitConfig(max_cost_per_hour_usd=10.0)})
    c = closing(Conductor(fake_settings(upstream.base_url), seed=1, evaluators=[],
                          limiter=limiter))
    req = c.make_request("hi", task_type="chat", client_id="acme", max_tokens=4000)
    bound = c.cost_upper_bound("direct-strong", req)
    first = await c.acomplete(request=req, strategy="direct-strong")
    assert 0 < first.outcome.cost_usd < bound / 10
    assert limiter.spent_last_hour("acme") == pytest.approx(first.outcome.cost_usd)
    later = await c.acomplete_later(req, strategy="direct-strong")
    assert c.wait_for_learning()
    assert limiter.spent_last_hour("acme") == pytest.approx(
        first.outcome.cost_usd + later.outcome.cost_usd)


async def test_a_limited_clients_settlement_never_runs_on_the_event_loop(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    """A stream settles before its last chunk and a failed request before its error, not
    later on the bookkeeping thread; a limited client's ledger may wait on a database,
    so that wait happens in a worker thread, never on the loop every request shares."""
    ledger = _ThreadRecordingLedger()
    limiter = RateLimiter({"acme": RateLimitConfig(requests_per_minute=100)}, ledger=ledger)
    c = closing(Conductor(fake_settings(upstream.base_url), seed=1, evaluators=[],
                          limiter=limiter))
    loop_thread = threading.get_ident()
    req = c.make_request("hi", task_type="chat", client_id="acme")
    items = [x async for x in c.astream(req, strategy="direct-cheap")]
    assert isinstance(items[-1], CompletionResult) and items[-1].outcome.cost_usd > 0
    upstream.behaviour.fail_statuses = [400]  # the client's fault: no retry, no fallback
    with pytest.raises(ProviderBadRequestError):
        await c.acomplete("hi", task_type="chat", client_id="acme", strategy="direct-cheap")
    assert len(ledger.settled_on) == 2 and loop_thread not in ledger.settled_on
    assert limiter.spent_last_hour("acme") == pytest.approx(items[-1].outcome.cost_usd)


async def test_the_python_api_passes_sampling_parameters_to_the_model(
        upstream: FakeUpstream, closing: Closing[Any]) -> None:
    c = closing(Conductor(fake_settings(upstream.base_url, attempts=1), seed=1,
                          evaluators=[]))
    result = await c.acomplete("hi", strategy="direct-cheap",
                               params={"temperature": 0.0, "seed": 11, "stop": "\n"})
    assert result.outcome.strategy == "direct-cheap"
    body = upstream.requests[-1]
    assert (body["temperature"], body["seed"], body["stop"]) == (0.0, 11, "\n")
    assert "top_p" not in body and "response_format" not in body  # only what was given
    with pytest.raises(InvalidRequestError, match="temperature"):
        c.make_request("hi", params={"temperature": 3})
    with pytest.raises(InvalidRequestError, match="logprobs"):
        c.make_request("hi", params={"logprobs": True})
