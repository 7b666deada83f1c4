"""A task type's price of quality per prompt: solved over its recent prompts only, and
again when the target moves."""

from __future__ import annotations

import numpy as np
import pytest

from conductor.bandit.context import ContextModel
from conductor.bandit.policy import TargetSpec, prompt_candidates, solve_price
from conductor.bandit.posterior import Prior, TaskPosterior
from conductor.bandit.prompts import PromptPricer


def _prompt(hard: bool, rng: np.random.Generator) -> np.ndarray:
    return np.array([-2.0 if hard else 2.0, *rng.normal(size=2)])


def test_the_price_is_solved_over_the_recent_prompts_and_again_when_the_target_moves() -> None:
    rng = np.random.default_rng(4)
    model = ContextModel(["strong", "cheap"], 3, prior_mean=np.array([0.5, 0.5]),
                         prior_sd=np.array([0.3, 0.3]), min_rewards=50)
    for _ in range(300):  # the cheap model is right on easy prompts only
        hard = bool(rng.random() < 0.5)
        z = _prompt(hard, rng)
        model.observe("strong", z, 1.0, 1.0, baseline=0.5)
        model.observe("cheap", z, 0.0 if hard else 1.0, 1.0, baseline=0.5)
    assert model.active
    prior = Prior(quality_alpha=1.0, quality_beta=1.0, latency_mu=6.9)
    post = TaskPosterior(["strong", "cheap"], [prior, prior])
    cost, el = np.array([46.0, 1.0]), np.ones(2, dtype=bool)
    pricer = PromptPricer(reservoir=20)
    lax = TargetSpec(target=0.5, base=0.5, safe=0)
    prompts = [_prompt(k < 10, rng) for k in range(30)]  # 10 hard, then 20 easy
    first = [pricer.context(model, post, z, cost, el, lax) for z in prompts]
    assert len({c.price for c in first if c is not None}) == 1  # solved once, kept
    strict = TargetSpec(target=0.9, base=0.9, safe=0)
    last = _prompt(False, rng)
    ctx = pricer.context(model, post, last, cost, el, strict)
    assert ctx is not None and ctx.cost_scale == 46.0
    candidates = prompt_candidates(post, cost, el, 0)

    def price_over(zs: list[np.ndarray], target: float = 0.9) -> float:
        return solve_price(model.predict_means(np.array(zs)),
                           np.tile(cost / cost[0], (len(zs), 1)), el & candidates, target)

    recent = price_over([*prompts[-19:], last])  # the last 20: all easy, so all go cheap
    assert ctx.price == pytest.approx(recent)
    assert recent > price_over([*prompts, last]) and recent != first[0].price
    # Half hard, half easy: the price falls inside the grid, in units of the reference's
    # cost (the strong model's), whatever the prices' own unit.
    mixed = [_prompt(True, rng) for _ in range(9)]
    for z in mixed:
        pricer.context(model, post, z, cost, el, strict)
    hard = _prompt(True, rng)
    ctx = pricer.context(model, post, hard, cost, el, TargetSpec(target=0.75, base=0.75,
                                                                 safe=0))
    assert ctx is not None
    assert ctx.price == pytest.approx(price_over([*prompts[-9:], last, *mixed, hard], 0.75))
    assert 1e-4 < ctx.price < 1e2


def test_under_a_target_a_prompt_is_offered_the_task_levels_mix_pair() -> None:
    """The pricer hands the decision the pair the task level mixes to meet the target
    (with the reference), not every strategy on the frontier."""
    prior = Prior(quality_alpha=1.0, quality_beta=1.0, latency_mu=6.9)
    post = TaskPosterior(["strong", "mid", "cheap"], [prior] * 3)
    for name, q in (("strong", 0.95), ("mid", 0.8), ("cheap", 0.5)):
        post.observe_reward(name, q, weight=400)
    model = ContextModel(post.strategies, 3, prior_mean=post.quality_mean(),
                         prior_sd=post.quality_std(), min_rewards=0, open_gain=-1.0)
    model.active = True
    cost, el = np.array([40.0, 4.0, 1.0]), np.ones(3, dtype=bool)
    frontier = prompt_candidates(post, cost, el, 0)
    assert frontier.tolist() == [True, True, True]
    ctx = PromptPricer(reservoir=8).context(
        model, post, np.zeros(3), cost, el, TargetSpec(target=0.9, base=0.9, safe=0))
    assert ctx is not None and ctx.candidates is not None
    assert ctx.candidates.tolist() == [True, True, False]  # 0.8 mixed with 0.95 for 0.9
