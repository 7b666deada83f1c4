"""Evaluators: heuristics, the LLM judge and reward fusion turn answers into rewards."""

from conductor.evaluators.base import Evaluator, SimulatedQualityEvaluator

__all__ = ["Evaluator", "SimulatedQualityEvaluator"]
