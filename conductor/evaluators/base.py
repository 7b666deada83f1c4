"""The evaluator protocol: turns an answer into a reward in [0, 1]."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from conductor.types import CompletionRequest, Outcome, Reward


@runtime_checkable
class Evaluator(Protocol):
    """Scores one answer. Returns None when it has nothing to say about this request."""

    name: str
    task_types: frozenset[str] | None  # None: every task type

    def evaluate(self, request: CompletionRequest, outcome: Outcome,
                 extra: dict[str, Any]) -> Reward | None: ...


class SimulatedQualityEvaluator:
    """The demo world's quality signal: the simulated correctness the demo provider attached."""

    name = "simulated"
    task_types: frozenset[str] | None = None

    def evaluate(self, request: CompletionRequest, outcome: Outcome,
                 extra: dict[str, Any]) -> Reward | None:
        score = extra.get("simulated_quality")
        if score is None:
            return None
        return Reward(request_id=outcome.request_id, source="simulated",
                      score=0.0 if outcome.error else float(score),
                      task_type=request.task_type, strategy=outcome.strategy)
