"""Probes under a quality target: a cheap strategy still being measured, or held back by
the conservative check, is named as the decision's probe and the safe strategy serves;
the rule is deterministic given the state, so propensities stay exact."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conductor.bandit.policy import (
    Choice,
    PolicyParams,
    PromptContext,
    TargetSpec,
    ThompsonPolicy,
    at_base,
    predict_costs,
    probeable,
    prompt_candidates,
)
from conductor.bandit.posterior import Prior, TaskPosterior
from conductor.bandit.simulate import cost_table
from conductor.types import Constraints

EL3 = np.ones(3, dtype=bool)


def _posterior(qualities: list[float], trials: list[float]) -> TaskPosterior:
    names = [f"s{i}" for i in range(len(qualities))]
    post = TaskPosterior(names, [Prior(quality_alpha=1.0, quality_beta=1.0,
                                       latency_mu=math.log(100.0))] * len(names))
    for name, q, n in zip(names, qualities, trials, strict=True):
        if n:
            post.observe_reward(name, q, weight=n)
    return post


def _spec(ratio: float, surplus: float = 50.0) -> TargetSpec:
    return TargetSpec(target=0.8, base=0.8, surplus=surplus, safe=0, trusted=True,
                      probe_ratio=ratio)


def _picks(post: TaskPosterior, spec: TargetSpec, n: int, seed: int) -> list[Choice]:
    """n decisions at temperature 1 on strategies costing 40, 1 and 20."""
    policy = ThompsonPolicy(PolicyParams(probe_trials=40.0))
    rng = np.random.default_rng(seed)
    table = cost_table([40.0, 1.0, 20.0])
    return [policy.decide_full(post, table, EL3, Constraints(), 1, 1.0, rng, spec)[0]
            for _ in range(n)]


def test_probeable_is_cheap_against_the_safe_strategy_and_never_the_safe_one() -> None:
    cost = np.array([40.0, 10.0, 11.0])
    assert probeable(_spec(0.25), cost).tolist() == [False, True, False]
    assert probeable(_spec(0.0), cost).tolist() == [False, False, False]
    assert probeable(_spec(1.0), cost).tolist() == [False, True, True]
    no_safe = TargetSpec(target=0.8, base=0.8, safe=-1, probe_ratio=1.0)
    assert not probeable(no_safe, cost).any()
    assert at_base(_spec(0.25)).probe_ratio == 0.0  # type: ignore[union-attr]


def test_a_thinly_measured_cheap_strategy_is_probed_and_the_others_serve() -> None:
    """s1 (cheap, 5 rewards at 0.9) is what the mix wants nearly always, and the surplus
    would let it serve: with probes it is named as the probe and the draw's mix is solved
    without it; without probes, it serves. s2 (as thin, but dearer than a quarter of s0)
    is never probed: it is explored by serving it."""
    post = _posterior([0.86, 0.9, 0.9], [500, 5, 5])
    picks = _picks(post, _spec(0.25), 400, 0)
    assert not any(c.index == 1 for c in picks)
    probed = [c for c in picks if c.probe >= 0]
    assert len(probed) > 200 and {c.probe for c in probed} == {1}
    assert all(c.index in (0, 2) and not c.held_back for c in probed)
    assert any(c.index == 2 for c in probed)  # the mix without s1: s2 where it meets it
    plain = _picks(post, _spec(0.0), 400, 1)
    assert sum(c.index == 1 for c in plain) > 200 and all(c.probe == -1 for c in plain)


def test_once_measured_a_cheap_strategy_serves_and_is_no_longer_probed() -> None:
    picks = _picks(_posterior([0.86, 0.9, 0.9], [500, 60, 5]), _spec(0.25), 300, 1)
    assert sum(c.index == 1 for c in picks) > 250
    assert all(c.probe == -1 for c in picks)


def test_a_cheap_strategy_the_check_holds_back_is_probed_however_well_measured() -> None:
    """No surplus: the conservative check holds s1 (0.7, measured 500 times) back; it is
    cheap, so it is probed rather than left unexplored."""
    post = _posterior([0.86, 0.7, 0.5], [500, 500, 500])
    picks = _picks(post, _spec(0.25, surplus=0.0), 200, 2)
    assert all(c.index == 0 for c in picks)
    assert {c.probe for c in picks if c.held_back} == {1}


def test_propensities_with_probes_match_the_served_frequencies() -> None:
    """The served choice's frequencies over 20,000 decisions match the propensities (the
    probe rule moves a thin cheap strategy's share to the safe one, exactly)."""
    post = _posterior([0.9, 0.8, 0.6], [300, 10, 60])
    table = cost_table([20.0, 4.0, 1.0])
    policy = ThompsonPolicy(PolicyParams(probe_trials=40.0))
    spec = TargetSpec(target=0.8, base=0.8, surplus=3.0, safe=0, trusted=True,
                      probe_ratio=0.25)
    rng = np.random.default_rng(5)
    probs = policy.choice_probabilities(post, table, EL3, Constraints(), 1, 1.0, rng,
                                        draws=40_000, target=spec)
    counts = np.bincount([policy.decide_full(post, table, EL3, Constraints(), 1, 1.0, rng,
                                             spec)[0].index for _ in range(20_000)],
                         minlength=3)
    assert probs[1] == 0.0 and counts[1] == 0  # thin and cheap: probed, never served
    assert probs[2] > 0.05  # measured: served in its share of the mix
    np.testing.assert_allclose(counts / 20_000, probs, atol=0.015)
    assert probs.sum() == pytest.approx(1.0)


def test_per_prompt_a_thin_strategy_outside_the_prompts_shortlist_is_still_probed() -> None:
    """Per prompt, the choice is among the task level's mix pair (s0, s1 here). s2 is
    cheap and thin: 5 unlucky rewards put it far below at the task level, so it is no
    candidate, but this prompt's prediction says it would win. It must be probed, or it
    stays thin and out of the shortlist for good (on RouterBench, per prompt, Yi-34B:
    0.83 on classify, never served in 2,700 requests)."""
    post = _posterior([0.9, 0.8, 0.0], [500, 500, 5])
    table = cost_table([40.0, 10.0, 1.0])
    cost = predict_costs(table, post, 1)
    spec = TargetSpec(target=0.85, base=0.85, surplus=50.0, safe=0, trusted=True,
                      probe_ratio=0.25)
    candidates = prompt_candidates(post, cost, EL3, 0, spec.base)
    assert candidates.tolist() == [True, True, False]
    ctx = PromptContext(mean=np.array([0.9, 0.8, 0.95]), var=np.full(3, 1e-4), price=0.5,
                        cost_scale=float(cost[0]), candidates=candidates)
    policy = ThompsonPolicy(PolicyParams(probe_trials=40.0))
    rng = np.random.default_rng(3)
    picks = [policy.decide_full(post, table, EL3, Constraints(), 1, 1.0, rng, spec, ctx)[0]
             for _ in range(50)]
    assert {c.probe for c in picks} == {2}
    assert {c.index for c in picks} == {1}  # served: the cheaper of the pair, not s2
