"""A per-prompt decision's context: what the contextual posterior predicts for this prompt,
the strategies it may choose among, and (under a quality target) the price of quality.

The price is the one at which choosing per prompt, the most predicted quality net of
priced cost, meets the target on average over the task type's recent prompts
(``solve_price``); it is re-solved every ``PRICE_EVERY`` observations of the task type or
when the target moves. The router, the replay harness and ``compare`` each keep one
``PromptPricer`` per task type, so all three decide per prompt the same way.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from conductor.bandit.context import ContextModel
from conductor.bandit.policy import PromptContext, TargetSpec, prompt_candidates, solve_price
from conductor.bandit.posterior import TaskPosterior

PRICE_EVERY = 25  # observations of a task type between re-solving its price of quality


class PromptPricer:
    """One task type's recent prompts (features and predicted costs, the last
    ``reservoir``) and its price of quality."""

    def __init__(self, reservoir: int) -> None:
        self._recent: deque[tuple[np.ndarray, np.ndarray]] = deque(maxlen=reservoir)
        self._price: tuple[float, tuple[int, float]] | None = None

    def context(self, model: ContextModel, post: TaskPosterior, z: np.ndarray,
                cost: np.ndarray, eligible: np.ndarray,
                spec: TargetSpec | None) -> PromptContext | None:
        """This prompt's context (features ``z``, predicted costs ``cost``), once ``model``
        predicts better than the task level (``active``); None until then, when the
        task-level rule decides. Every prompt joins the recent ones either way."""
        self._recent.append((z, cost))
        if not model.active:
            return None
        mean, var, _ = model.predict(z)
        candidates = prompt_candidates(post, cost, eligible, spec.safe if spec else -1,
                                       spec.base if spec else None)
        if spec is None:
            return PromptContext(mean=mean, var=var, candidates=candidates)
        key = (int(post.observations // PRICE_EVERY), round(spec.target, 3))
        if self._price is None or self._price[1] != key:
            means = model.predict_means(np.array([x for x, _ in self._recent]))
            costs = np.array([c / max(c[spec.safe], 1e-300) for _, c in self._recent])
            self._price = (solve_price(means, costs, eligible & candidates, spec.target), key)
        return PromptContext(mean=mean, var=var, price=self._price[0],
                             cost_scale=float(cost[spec.safe]), candidates=candidates)
