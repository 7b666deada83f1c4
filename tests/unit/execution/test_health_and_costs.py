"""Circuit breakers fed by attempts, and the cost bound admission reserves."""

from __future__ import annotations

import pytest

from conductor import Conductor, default_settings
from conductor.errors import ProviderBadRequestError, ProviderServerError, ProviderTimeoutError
from conductor.evaluators.judge import JUDGE_MAX_TOKENS, JUDGE_PROMPT_TOKENS_BOUND
from conductor.execution.costs import cost_upper_bound
from conductor.execution.health import Health
from conductor.types import CompletionRequest, estimate_prompt_tokens


def test_requests_rejected_as_the_clients_fault_do_not_trip_the_breaker() -> None:
    h = Health(default_settings())
    for _ in range(10):  # e.g. a prompt too long for the context window
        h.record("gpt-4o-mini", ProviderBadRequestError("400: too long", status=400))
    assert h.breaker("gpt-4o-mini").state == "closed"
    assert h.unavailable() == set() and h.circuits_opened == 0
    for _ in range(3):
        h.record("gpt-4o-mini", ProviderServerError("500", status=500))
    assert h.breaker("gpt-4o-mini").state == "open"
    assert h.circuits_opened == 1
    # Every strategy whose (first) model is gpt-4o-mini is out; the verified one drafts on it.
    assert h.unavailable() == {"turbo-cheap", "batch-cheap", "quality-verified"}


def test_timeouts_count_against_the_model() -> None:
    h = Health(default_settings())
    for _ in range(3):
        h.record("gpt-4o", ProviderTimeoutError("no response"))
    assert h.unavailable() == {"turbo-quality"}


def test_the_judges_cost_is_part_of_the_verified_upper_bound() -> None:
    s = default_settings()
    req = CompletionRequest(prompt="Write a long product description", task_type="generate_long",
                            max_tokens=500)
    n_in = estimate_prompt_tokens(req.chat_messages())
    draft = s.models["gpt-4o-mini"].cost_usd(n_in, 500)
    escalation = s.models["gpt-4o"].cost_usd(n_in, 500)
    judge = s.models["gpt-4o-mini"].cost_usd(n_in + 500 + JUDGE_PROMPT_TOKENS_BOUND,
                                             JUDGE_MAX_TOKENS)  # the judge is turbo-cheap
    assert cost_upper_bound(s, "quality-verified", req) == pytest.approx(
        draft + judge + escalation, rel=1e-12)
    assert cost_upper_bound(s, "turbo-quality", req) == pytest.approx(escalation)
    assert cost_upper_bound(s, "batch-cheap", req) > draft * 0.5  # plus the batch framing


def test_a_batched_request_never_costs_more_than_admission_reserved() -> None:
    """An item that goes alone is charged the whole batch framing (instructions, item
    header, the JSON array): the bound includes it, or a budget is passed (a shared
    budget overshot by ~1e-6 USD showed this)."""
    c = Conductor(default_settings(), seed=3)
    for i in range(60):
        prompt = f"item {i} " * (1 + i % 7)
        task, max_tokens = ("classify", "chat", "summarize")[i % 3], (16, None)[i % 2]
        r = c.complete(prompt, task_type=task, max_tokens=max_tokens, strategy="batch-cheap")
        assert r.outcome.strategy == "batch-cheap" and not r.outcome.error
        bound = c.cost_upper_bound("batch-cheap", CompletionRequest(
            prompt=prompt, task_type=task, max_tokens=max_tokens))
        assert r.outcome.cost_usd <= bound, (i, r.outcome.cost_usd, bound)
    c.close()


def test_without_max_tokens_the_task_types_output_cap_bounds_the_cost() -> None:
    s = default_settings()
    req = CompletionRequest(prompt="hi", task_type="chat")
    n_in = estimate_prompt_tokens(req.chat_messages())
    assert cost_upper_bound(s, "turbo-quality", req) == pytest.approx(
        s.models["gpt-4o"].cost_usd(n_in, s.task_types["chat"].max_output_tokens))
