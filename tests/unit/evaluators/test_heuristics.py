"""Heuristic evaluators on hand-made good and bad outputs."""

from __future__ import annotations

import pytest

from conductor.evaluators.heuristics import (
    AnswerPresent,
    LabelValid,
    ValidJSON,
    WithinWordLimit,
    heuristic_score,
    heuristics_for,
)
from conductor.types import CompletionRequest, Outcome


def _out(text: str, error: str | None = None, finish: str = "stop") -> Outcome:
    return Outcome(request_id="r", strategy="s", model="m", latency_ms=1.0, text=text,
                   error=error, finish_reason=finish)


def _req(task: str, **meta: object) -> CompletionRequest:
    return CompletionRequest(prompt="x", task_type=task, metadata=dict(meta))


@pytest.mark.parametrize(("text", "score"), [
    ('{"name": "AeroPress", "price": 39.9}', 1.0),
    ('```json\n{"name": "AeroPress"}\n```', 1.0),
    ('{"name": "AeroPress", "price": }', 0.0),
    ("Sure! Here is the JSON: {", 0.0),
])
def test_valid_json(text: str, score: float) -> None:
    r = ValidJSON().evaluate(_req("extract_json"), _out(text), {})
    assert r is not None and r.score == score and r.source == "heuristic"


def test_json_schema_is_enforced_when_given() -> None:
    schema = {"type": "object", "required": ["name", "price"],
              "properties": {"price": {"type": "number"}}}
    req = _req("extract_json", json_schema=schema)
    good = ValidJSON().evaluate(req, _out('{"name": "A", "price": 3}'), {})
    missing = ValidJSON().evaluate(req, _out('{"name": "A"}'), {})
    wrong_type = ValidJSON().evaluate(req, _out('{"name": "A", "price": "3"}'), {})
    assert (good.score, missing.score, wrong_type.score) == (1.0, 0.0, 0.0)


@pytest.mark.parametrize(("text", "score"), [
    ("positive", 1.0), ("Positive.", 1.0), ('"NEGATIVE"', 1.0), ("**neutral**", 1.0),
    ("It is positive", 0.0), ("mixed", 0.0),
])
def test_label_valid_against_configured_labels(text: str, score: float) -> None:
    ev = LabelValid(("positive", "negative", "neutral"))
    assert ev.evaluate(_req("classify"), _out(text), {}).score == score


def test_request_labels_override_configured_ones() -> None:
    ev = LabelValid(("positive", "negative"))
    assert ev.evaluate(_req("classify", labels=["spam", "ham"]), _out("ham"), {}).score == 1.0
    assert ev.evaluate(_req("classify", labels=["spam", "ham"]), _out("positive"), {}).score == 0
    assert LabelValid().evaluate(_req("classify"), _out("anything"), {}) is None


@pytest.mark.parametrize(("words", "score"), [(10, 1.0), (50, 1.0), (75, 0.5), (100, 0.0),
                                              (0, 0.0)])
def test_summary_word_limit(words: int, score: float) -> None:
    r = WithinWordLimit(50).evaluate(_req("summarize"), _out(" ".join(["w"] * words)), {})
    assert r is not None and r.score == pytest.approx(score)


@pytest.mark.parametrize(("out", "score"), [
    (_out("fine answer"), None),
    (_out(""), 0.0),
    (_out("   \n"), 0.0),
    (_out("partial", finish="length"), 0.0),
    (_out("", error="ProviderTimeoutError: no response"), 0.0),
])
def test_any_task_error_empty_or_truncated_is_zero(out: Outcome, score: float | None) -> None:
    r = AnswerPresent().evaluate(_req("chat"), out, {})
    assert (r.score if r else None) == score


def test_the_lowest_opinion_wins_and_config_picks_by_name() -> None:
    evs = heuristics_for("extract_json", (), (), None)
    assert [e.name for e in evs] == ["answer_present", "valid_json"]
    assert heuristic_score(evs, _req("extract_json"), _out('{"a": 1}'), {}).score == 1.0
    assert heuristic_score(evs, _req("extract_json"), _out('{"a": 1}', finish="length"),
                           {}).score == 0.0
    only = heuristics_for("classify", ("answer_present",), ("x",), None)
    assert [e.name for e in only] == ["answer_present"]
    assert heuristic_score(only, _req("classify"), _out("y"), {}) is None
