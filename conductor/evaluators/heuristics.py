"""Free heuristic evaluators, run on every answer.

Each declares the task types it serves; ``[task_types.X] heuristics = [...]`` picks them
by name (default: the ones that serve X). A request's heuristic score is the lowest
opinion among them: any single failed check makes the answer bad.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import msgspec

from conductor.types import CompletionRequest, Outcome, Reward

_PUNCT = re.compile(r"^[\s\"'`*.:;,!()\[\]-]+|[\s\"'`*.:;,!()\[\]-]+$")


def _reward(outcome: Outcome, score: float, request: CompletionRequest) -> Reward:
    return Reward(request_id=outcome.request_id, source="heuristic", score=score,
                  task_type=request.task_type, strategy=outcome.strategy)


class AnswerPresent:
    """Any task: an error, an empty answer or a truncated one (cut by max_tokens) -> 0."""

    name = "answer_present"
    task_types: frozenset[str] | None = None

    def evaluate(self, request: CompletionRequest, outcome: Outcome,
                 extra: dict[str, Any]) -> Reward | None:
        if outcome.error or not outcome.text.strip() or outcome.finish_reason == "length":
            return _reward(outcome, 0.0, request)
        return None


class ValidJSON:
    """extract_json: the answer parses as JSON and, when the request's metadata carries a
    ``json_schema``, validates against it -> 1; otherwise 0. Code fences are tolerated."""

    name = "valid_json"
    task_types: frozenset[str] | None = frozenset({"extract_json"})

    def evaluate(self, request: CompletionRequest, outcome: Outcome,
                 extra: dict[str, Any]) -> Reward | None:
        text = outcome.text.strip()
        if text.startswith("```"):
            text = text.strip("`")
            text = text[text.find("\n") + 1:] if "\n" in text else text
        try:
            value = msgspec.json.decode(text.strip())
        except msgspec.DecodeError:
            return _reward(outcome, 0.0, request)
        schema = request.metadata.get("json_schema")
        if isinstance(schema, dict):
            try:
                jsonschema.validate(value, schema)
            except jsonschema.ValidationError:
                return _reward(outcome, 0.0, request)
            except jsonschema.SchemaError:
                return None  # a bad schema says nothing about the answer
        return _reward(outcome, 1.0, request)


class LabelValid:
    """classify: the answer is one of the allowed labels (request metadata ``labels``, else
    the task type's configured labels), ignoring case and surrounding punctuation."""

    name = "label_valid"
    task_types: frozenset[str] | None = frozenset({"classify"})

    def __init__(self, labels: tuple[str, ...] = ()) -> None:
        self.labels = labels

    def evaluate(self, request: CompletionRequest, outcome: Outcome,
                 extra: dict[str, Any]) -> Reward | None:
        labels = request.metadata.get("labels") or self.labels
        if not labels:
            return None
        answer = _PUNCT.sub("", outcome.text).lower()
        ok = answer in {str(label).lower() for label in labels}
        return _reward(outcome, 1.0 if ok else 0.0, request)


class WithinWordLimit:
    """summarize: non-empty and within the word limit (metadata ``max_words``, else the
    task type's). Over the limit the score falls linearly, to 0 at twice the limit."""

    name = "within_word_limit"
    task_types: frozenset[str] | None = frozenset({"summarize"})

    def __init__(self, max_words: int | None = None) -> None:
        self.max_words = max_words

    def evaluate(self, request: CompletionRequest, outcome: Outcome,
                 extra: dict[str, Any]) -> Reward | None:
        words = len(outcome.text.split())
        if words == 0:
            return _reward(outcome, 0.0, request)
        limit = request.metadata.get("max_words") or self.max_words
        if not isinstance(limit, int) or limit <= 0:
            return None
        score = 1.0 if words <= limit else max(0.0, 1.0 - (words - limit) / limit)
        return _reward(outcome, score, request)


def heuristics_for(task_type: str, names: tuple[str, ...], labels: tuple[str, ...],
                   max_words: int | None) -> list[Any]:
    """The heuristics a task type uses: those named, or by default every one serving it."""
    all_: list[Any] = [AnswerPresent(), ValidJSON(), LabelValid(labels),
                       WithinWordLimit(max_words)]
    if names:
        by_name = {h.name: h for h in all_}
        return [by_name[n] for n in names]
    return [h for h in all_ if h.task_types is None or task_type in h.task_types]



def heuristic_score(evaluators: list[Any], request: CompletionRequest, outcome: Outcome,
                    extra: dict[str, Any]) -> Reward | None:
    """The lowest opinion of the given heuristics, or None when none has one."""
    worst: Reward | None = None
    for ev in evaluators:
        r = ev.evaluate(request, outcome, extra)
        if r is not None and (worst is None or r.score < worst.score):
            worst = r
    return worst
