"""Wire types reject bad values at decode time, naming the field."""

from __future__ import annotations

import msgspec
import pytest

from conductor.types import CompletionRequest, Constraints, Decision, Reward, decode_request


@pytest.mark.parametrize(("body", "message"), [
    (b'{"prompt": "x", "constraints": {"min_quality": 1.5}}',
     r"Expected `float` <= 1\.0 - at `\$\.constraints\.min_quality`"),
    (b'{"prompt": "x", "constraints": {"max_latency_ms": 0}}',
     r"Expected `float` > 0\.0 - at `\$\.constraints\.max_latency_ms`"),
    (b'{"prompt": "x", "constraints": {"max_cost_usd": -1}}',
     r"Expected `float` >= 0\.0 - at `\$\.constraints\.max_cost_usd`"),
    (b'{"prompt": "x", "task_type": ""}', r"at `\$\.task_type`"),
    (b'{"prompt": "x", "temperature": 2}', r"unknown field `temperature`"),
    (b'{"messages": [{"role": "wizard", "content": "hi"}]}', r"at `\$\.messages\[0\]\.role`"),
])
def test_bad_requests_fail_naming_the_field(body: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message):
        decode_request(body)


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
