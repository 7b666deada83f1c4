"""Small simulated worlds to check the policy: Bernoulli quality, fixed costs, log-normal latency.

Used by the tests and by `benchmarks/starvation.py`; the replay harness uses real outcome tables.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from conductor.bandit.policy import PolicyParams, StrategyTable, ThompsonPolicy
from conductor.bandit.posterior import Prior, TaskPosterior
from conductor.types import Constraints


def flat_posterior(names: Sequence[str], latency_ms: float = 100.0) -> TaskPosterior:
    prior = Prior(quality_alpha=1.0, quality_beta=1.0, latency_mu=math.log(latency_ms))
    return TaskPosterior(list(names), [prior] * len(names))


def cost_table(costs: Sequence[float]) -> StrategyTable:
    """Strategies whose cost for a 1-token request is ``costs`` (no output tokens priced)."""
    n = len(costs)
    return StrategyTable(names=tuple(f"s{i}" for i in range(n)), input_price=tuple(costs),
                         output_price=(0.0,) * n, discount=(1.0,) * n,
                         extra_latency_ms=(0.0,) * n, draft=(-1,) * n, escalate=(-1,) * n)


def run_bernoulli_world(qualities: Sequence[float], costs: Sequence[float],
                        constraints: Constraints, seed: int, n: int = 2000,
                        latencies_ms: Sequence[float] | None = None,
                        params: PolicyParams | None = None) -> np.ndarray:
    """Run the policy online; rewards are Bernoulli(quality). Returns the chosen indices."""
    policy_rng = np.random.default_rng([seed, 1])
    world_rng = np.random.default_rng([seed, 2])
    table = cost_table(costs)
    post = flat_posterior(table.names)
    policy = ThompsonPolicy(params or PolicyParams())
    eligible = np.ones(len(costs), dtype=bool)
    lat = latencies_ms or [100.0] * len(costs)
    picks = np.empty(n, dtype=int)
    for k in range(n):
        i = policy.decide(post, table, eligible, constraints, 1, 1.0, policy_rng).index
        picks[k] = i
        latency = lat[i] * math.exp(world_rng.normal(0.0, 0.2))
        post.observe_outcome(table.names[i], latency, 1, None, 1.0)
        post.observe_reward(table.names[i], float(world_rng.random() < qualities[i]))
    return picks
