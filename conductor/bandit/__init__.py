"""The policy: posteriors per (task type, strategy) and constrained Thompson sampling.

Pure numpy/scipy. Randomness comes from an injected ``numpy.random.Generator``;
nothing here reads a clock or does I/O.
"""

from conductor.bandit.policy import Choice, PolicyParams, StrategyTable, ThompsonPolicy
from conductor.bandit.posterior import PosteriorState, Prior, TaskPosterior

__all__ = [
    "Choice",
    "PolicyParams",
    "PosteriorState",
    "Prior",
    "StrategyTable",
    "TaskPosterior",
    "ThompsonPolicy",
]
