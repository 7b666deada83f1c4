"""Wire types reject bad values when a request is built, naming the field."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from conductor.deciding import make_request
from conductor.errors import InvalidRequestError
from conductor.types import CompletionRequest, Constraints, Decision, Reward


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"min_quality": 1.5}, r"Expected `float` <= 1\.0 - at `\$\.constraints\.min_quality`"),
    ({"max_latency_ms": 0}, r"Expected `float` > 0\.0 - at `\$\.constraints\.max_latency_ms`"),
    ({"max_cost_usd": -1}, r"Expected `float` >= 0\.0 - at `\$\.constraints\.max_cost_usd`"),
    ({"max_tokens": 0}, r"at `\$\.max_tokens`"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, r"at `\$\.messages\[0\]\.role`"),
    ({"messages": [{"role": "user", "content": "hi", "name": "x"}]}, r"unknown field `name`"),
])
def test_bad_requests_fail_naming_the_field(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidRequestError, match=message):
        make_request("x", **kwargs)


def test_constraints_merge_over_defaults() -> None:
    merged = Constraints(min_quality=0.9).merged_over(
        Constraints(min_quality=0.5, max_latency_ms=100.0))
    assert merged == Constraints(min_quality=0.9, max_latency_ms=100.0)


def test_prompt_becomes_one_user_message() -> None:
    req = CompletionRequest(prompt="hello")
    assert [(m.role, m.content) for m in req.chat_messages()] == [("user", "hello")]


def test_reward_score_must_be_in_unit_interval() -> None:
    with pytest.raises(msgspec.ValidationError, match=r"<= 1\.0 - at `\$\.score`"):
        msgspec.convert({"request_id": "r", "source": "user", "score": 2.0}, Reward)


def test_decision_round_trips_through_json() -> None:
    from conductor import Conductor
    d = Conductor(seed=0).predict_only(prompt="hi", task_type="chat")
    back = msgspec.json.decode(msgspec.json.encode(d), type=Decision)
    assert back == d
