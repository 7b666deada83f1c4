"""Quality targets: the cheapest mix, the deficit controller, the conservative check,
and propensities of mixed decisions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy.optimize import linprog

from conductor.bandit.policy import (
    PolicyParams,
    PromptContext,
    TargetSpec,
    ThompsonPolicy,
    predict_costs,
    prompt_candidates,
)
from conductor.bandit.posterior import Prior, TaskPosterior
from conductor.bandit.simulate import cost_table
from conductor.bandit.targets import (
    TargetState,
    cheapest_mix,
    effective_target,
    mix_row,
    mix_shares,
)
from conductor.types import Constraints


def _mix(q: list[float], cost: list[float], target: float,
         feasible: list[bool] | None = None) -> tuple[int, int, float, bool]:
    """The array form and the frontier walk (the request path's) give the same mix."""
    f = feasible or [True] * len(q)
    low, high, p, met = cheapest_mix(np.array([q]), np.array(cost), np.array([f]), target)
    arrays = int(low[0]), int(high[0]), float(p[0]), bool(met[0])
    walk = mix_row(q, cost, f, target)
    assert walk[3] == arrays[3]
    if walk[3]:  # the same cost (degenerate ties, collinear points, may pick another pair)
        assert (1 - walk[2]) * cost[walk[0]] + walk[2] * cost[walk[1]] == pytest.approx(
            (1 - arrays[2]) * cost[arrays[0]] + arrays[2] * cost[arrays[1]], abs=1e-9)
    else:
        assert walk[:2] == arrays[:2]
    return arrays


def test_the_cheapest_mix_of_a_cheap_and_a_strong_strategy() -> None:
    """0.64 p + 0.86 (1 - p) = 0.817: p(strong) = 0.805, at 1 + 0.805 x 45 per request."""
    low, high, p, met = _mix([0.86, 0.64], [46.0, 1.0], 0.817)
    assert (low, high, met) == (1, 0, True)
    assert p == pytest.approx((0.817 - 0.64) / (0.86 - 0.64))


def test_a_cheap_strategy_that_qualifies_alone_is_used_alone() -> None:
    assert _mix([0.86, 0.83, 0.64], [46.0, 5.0, 1.0], 0.60) == (2, 2, 0.0, True)
    # The middle one qualifies too, but mixing the cheapest with it is cheaper still:
    # 0.64 (1 - p) + 0.83 p = 0.817 at p = 0.93, cost 4.73 < 5.
    low, high, p, _ = _mix([0.86, 0.83, 0.64], [46.0, 5.0, 1.0], 0.817)
    assert (low, high) == (2, 1) and p == pytest.approx((0.817 - 0.64) / (0.83 - 0.64))


def test_the_mix_skips_a_dearer_strategy_that_is_not_better() -> None:
    # s1 costs more than s2 for the same quality: the mix is s2 with s0.
    low, high, p, _ = _mix([0.90, 0.60, 0.60], [10.0, 3.0, 1.0], 0.8)
    assert (low, high) == (2, 0) and p == pytest.approx(2 / 3)


def test_floors_and_limits_restrict_the_mix() -> None:
    # s1 would qualify alone but is infeasible (its draw failed a floor, or its latency).
    low, high, p, _ = _mix([0.9, 0.85, 0.5], [10.0, 2.0, 1.0], 0.8, [True, False, True])
    assert (low, high) == (2, 0) and p == pytest.approx(0.75)


def test_an_unreachable_target_takes_the_best_feasible_and_nothing_feasible_is_minus_one() -> None:
    assert _mix([0.7, 0.6], [2.0, 1.0], 0.9) == (0, 0, 0.0, False)
    assert _mix([0.7, 0.6], [2.0, 1.0], 0.5, [False, False]) == (-1, -1, 0.0, False)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0.0, 1.0), st.floats(0.01, 100.0)), min_size=1, max_size=7),
       st.floats(0.05, 0.95))
def test_the_mix_is_the_linear_programs_optimum(points: list[tuple[float, float]],
                                                 target: float) -> None:
    q = [x for x, _ in points]
    cost = [c for _, c in points]
    # HiGHS calls a target feasible within its 1e-7 tolerance (it once took 0.05 as meeting
    # 0.05000000000000001); at that distance either answer is right.
    assume(abs(max(q) - target) > 1e-7)
    low, high, p, met = _mix(q, cost, target)
    lp = linprog(cost, A_ub=[[-x for x in q]], b_ub=[-target], A_eq=[[1.0] * len(q)],
                 b_eq=[1.0], bounds=[(0, None)] * len(q), method="highs")
    assert met == (lp.status == 0)
    if met:
        ours = (1 - p) * cost[low] + p * cost[high]
        assert ours == pytest.approx(lp.fun, rel=1e-6, abs=1e-9)
        assert (1 - p) * q[low] + p * q[high] >= target - 1e-9


def test_mix_shares_integrate_the_coin() -> None:
    rows = mix_shares(np.array([1, 2, -1, 0]), np.array([0, 2, -1, 2]),
                      np.array([0.25, 0.0, 0.0, 0.5]), 3)
    assert rows.tolist() == [[0.25, 0.75, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0],
                             [0.5, 0.0, 0.5]]


def test_the_controller_raises_the_target_by_the_deficit_and_caps_a_surplus() -> None:
    s = TargetState()
    for r in (0.0, 1.0, 0.0, 1.0):
        s.observe(r, 1.0)
    assert s.mean() == 0.5 and s.deficit(0.8) == pytest.approx(4 * 0.8 - 2.0)
    assert effective_target(0.8, s, gain=0.01, surplus_cap=0.02) == pytest.approx(0.812)
    s.correct(0.0, 1.0)  # a better source replaced a reward: replaced, not added
    assert s.count == 4 and s.mean() == 0.75
    rich = TargetState(reward_sum=100.0, count=100.0)
    assert effective_target(0.8, rich, gain=0.01, surplus_cap=0.02) == pytest.approx(0.78)
    decayed = TargetState()
    decayed.observe(1.0, 0.5)
    decayed.observe(0.0, 0.5)
    assert (decayed.reward_sum, decayed.count) == (0.5, 1.5)


def _posterior(qualities: list[float], n: int) -> TaskPosterior:
    names = [f"s{i}" for i in range(len(qualities))]
    post = TaskPosterior(names, [Prior(quality_alpha=1.0, quality_beta=1.0,
                                       latency_mu=math.log(100.0))] * len(names))
    for name, q in zip(names, qualities, strict=True):
        post.observe_reward(name, q, weight=n)
    return post


def test_the_conservative_check_serves_the_safe_strategy_without_a_surplus() -> None:
    post = _posterior([0.86, 0.64], 400)
    table = cost_table([46.0, 1.0])
    policy = ThompsonPolicy(PolicyParams(wide_posterior_trials=0))
    rng = np.random.default_rng(0)
    el = np.ones(2, dtype=bool)
    broke = TargetSpec(target=0.817, base=0.817, surplus=0.0, safe=0)
    picks = [policy.decide_full(post, table, el, Constraints(), 1, 1.0, rng, broke)[0]
             for _ in range(300)]
    assert all(c.index == 0 for c in picks)
    assert any(c.held_back for c in picks)  # the mix wanted s1 sometimes; it was held back
    # Everything but the safe strategy held back: its propensity is exactly 1, no draws.
    before = rng.bit_generator.state
    probs = policy.choice_probabilities(post, table, el, Constraints(), 1, 1.0, rng,
                                        target=broke, focus=0)
    assert probs.tolist() == [1.0, 0.0] and rng.bit_generator.state == before
    rich = TargetSpec(target=0.817, base=0.817, surplus=5.0, safe=0)
    share = np.mean([policy.decide_full(post, table, el, Constraints(), 1, 1.0, rng, rich)[0]
                     .index == 1 for _ in range(3000)])
    assert share == pytest.approx(1 - (0.817 - 0.64) / (0.86 - 0.64), abs=0.04)


@pytest.mark.parametrize("surplus", [0.0, 0.3, 5.0])
def test_propensities_of_mixed_decisions_match_the_choice_frequencies(surplus: float) -> None:
    """20,000 decisions on a fixed posterior: each strategy's frequency matches the logged
    propensity (Monte Carlo over draws with the coin integrated, then the conservative
    check). Three strategies with overlapping posteriors, a latency limit and a floor."""
    post = _posterior([0.9, 0.8, 0.6], 25)
    for name, ms in (("s0", 400.0), ("s1", 900.0), ("s2", 150.0)):
        for _ in range(15):
            post.observe_outcome(name, ms * math.exp(np.random.default_rng(1).normal(0, 0.3)),
                                 1, None, 1.0)
    table = cost_table([20.0, 4.0, 1.0])
    policy = ThompsonPolicy(PolicyParams())
    el = np.ones(3, dtype=bool)
    c = Constraints(min_quality=0.5, max_latency_ms=1500.0)
    spec = TargetSpec(target=0.8, base=0.8, surplus=surplus, safe=0)
    rng = np.random.default_rng(7)
    probs = policy.choice_probabilities(post, table, el, c, 1, 1.0, rng, draws=40_000,
                                        target=spec)
    counts = np.bincount([policy.decide_full(post, table, el, c, 1, 1.0, rng, spec)[0].index
                          for _ in range(20_000)], minlength=3)
    assert probs.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(counts / 20_000, probs, atol=0.015)
    if surplus == 0.0:
        assert probs[0] > 0.9  # nothing to spend: the safe strategy serves


def test_a_decisions_own_propensity_is_drawn_until_it_is_precise() -> None:
    """The logged propensity (``focus``) stops after one chunk of draws for a choice every
    draw agrees on and 3 / draws is within 3% of, and keeps drawing for a rare choice,
    until its standard error is within 3% of it."""
    table = cost_table([20.0, 4.0, 1.0])
    policy = ThompsonPolicy(PolicyParams())
    el = np.ones(3, dtype=bool)
    spec = TargetSpec(target=0.85, base=0.85, surplus=5.0, safe=0)
    chunk = PolicyParams().mix_propensity_chunk

    def estimate(post: TaskPosterior, focus: int | None, draws: int | None,
                 seed: int) -> np.ndarray:
        return policy.choice_probabilities(post, table, el, Constraints(), 1, 1.0,
                                           np.random.default_rng(seed), draws=draws,
                                           target=spec, focus=focus)

    measured = _posterior([0.9, 0.8, 0.6], 5000)
    once = estimate(measured, 1, None, 3)
    assert once[1] == pytest.approx(0.5, abs=0.05)
    # Every draw agrees on s1's share, but 3 / 100 is not within 3% of 0.5: two chunks,
    # so not the estimate of one.
    assert not np.array_equal(once, estimate(measured, None, chunk, 3))
    sure = TargetSpec(target=0.55, base=0.55, surplus=5.0, safe=0)  # s2 alone meets it
    focused, fixed = np.random.default_rng(3), np.random.default_rng(3)
    certain = policy.choice_probabilities(measured, table, el, Constraints(), 1, 1.0,
                                          focused, target=sure, focus=2)
    assert certain[2] == 1.0
    # One chunk: as many draws as a fixed budget of one chunk takes.
    policy.choice_probabilities(measured, table, el, Constraints(), 1, 1.0, fixed,
                                draws=chunk, target=sure)
    assert focused.bit_generator.state == fixed.bit_generator.state

    young = _posterior([0.9, 0.8, 0.6], 25)
    truth = estimate(young, None, 400_000, 0)
    rare = int(np.argmin(truth))
    assert 0.01 < truth[rare] < 0.2
    rare_runs = np.array([estimate(young, rare, None, s)[rare] for s in range(40)])
    fixed_runs = np.array([estimate(young, None, chunk, s)[rare] for s in range(40)])
    assert abs(rare_runs.mean() / truth[rare] - 1) < 0.02
    # 3% asked, but 3% of 0.05 takes more than the 4,000 draws allowed: it stops there.
    assert rare_runs.std() / truth[rare] < 0.07
    assert fixed_runs.std() > 4 * rare_runs.std()  # it drew far beyond the first chunk


def _prompt(mean: list[float], sd: float, price: float, post, table, spec) -> PromptContext:
    """A prompt's predicted qualities, with the candidates the router would allow."""
    cost = predict_costs(table, post, 1)
    return PromptContext(mean=np.array(mean), var=np.full(len(mean), sd ** 2), price=price,
                         cost_scale=float(cost[spec.safe]),
                         candidates=prompt_candidates(post, cost, np.ones(len(mean), bool),
                                                      spec.safe))


def test_a_prompt_the_cheap_model_is_predicted_to_pass_is_not_held_back_in_deficit() -> None:
    # Per prompt, a prediction is uncertain (sd 0.1 here), so mean - sd is under the target
    # for every prompt. The greedy choice for an easy prompt, predicted above the target,
    # is served even in deficit; a hard prompt's cheap choice is held back (to s0).
    post = _posterior([0.86, 0.64], 400)
    table = cost_table([46.0, 1.0])
    policy = ThompsonPolicy(PolicyParams(wide_posterior_trials=0))
    el = np.ones(2, dtype=bool)
    broke = TargetSpec(target=0.817, base=0.817, surplus=-2.0, safe=0)
    rng = np.random.default_rng(3)
    for mean, served in (([0.90, 0.95], 1), ([0.90, 0.70], 0)):
        ctx = _prompt(mean, 0.1, 0.5, post, table, broke)
        picks = [policy.decide_full(post, table, el, Constraints(), 1, 0.25, rng, broke,
                                    ctx)[0] for _ in range(400)]
        share = np.mean([c.index == served for c in picks])
        probs = policy.choice_probabilities(post, table, el, Constraints(), 1, 0.25, rng,
                                            draws=20_000, target=broke, context=ctx)
        print(mean, "served", served, share, "propensity", probs.round(3))
        assert share > 0.75
        assert probs[served] == pytest.approx(share, abs=0.05)
    hard = _prompt([0.90, 0.70], 0.1, 0.5, post, table, broke)
    assert any(policy.decide_full(post, table, el, Constraints(), 1, 0.25, rng, broke,
                                  hard)[0].held_back for _ in range(400))


def test_per_prompt_choices_stay_on_the_task_types_frontier() -> None:
    # s1 is dearer than s2 and no better at the task level: whatever a prompt's prediction
    # says about it (a prediction that errs high is the one an argmax picks), the prompt
    # is served by a frontier strategy, and s1's propensity is 0.
    post = _posterior([0.9, 0.7, 0.75], 400)
    table = cost_table([40.0, 10.0, 2.0])
    policy = ThompsonPolicy(PolicyParams(wide_posterior_trials=0))
    el = np.ones(3, dtype=bool)
    spec = TargetSpec(target=0.8, base=0.8, surplus=5.0, safe=0)
    ctx = _prompt([0.9, 0.99, 0.75], 0.02, 0.5, post, table, spec)
    assert ctx.candidates is not None and ctx.candidates.tolist() == [True, False, True]
    rng = np.random.default_rng(5)
    picks = {policy.decide_full(post, table, el, Constraints(), 1, 0.5, rng, spec, ctx)[0]
             .index for _ in range(300)}
    assert 1 not in picks and picks
    probs = policy.choice_probabilities(post, table, el, Constraints(), 1, 0.5, rng,
                                        target=spec, context=ctx)
    assert probs[1] == 0.0 and probs.sum() == pytest.approx(1.0)


def test_the_targets_reference_stays_a_per_prompt_candidate_off_the_frontier() -> None:
    # s0 is the reference but a cheaper s1 is better at the task level, so s0 is off the
    # frontier; it stays a candidate all the same (a held-back choice is served by it).
    post = _posterior([0.85, 0.9, 0.6], 400)
    cost = predict_costs(cost_table([40.0, 10.0, 1.0]), post, 1)
    el = np.ones(3, dtype=bool)
    assert prompt_candidates(post, cost, el).tolist() == [False, True, True]
    assert prompt_candidates(post, cost, el, safe=0).tolist() == [True, True, True]
    assert prompt_candidates(post, cost, np.array([False, True, True]), safe=0).tolist() == [
        False, True, True]  # but not when it is not eligible


def test_under_a_target_a_prompt_chooses_between_the_task_levels_mix_pair_only() -> None:
    # Four strategies, all on the frontier (quality rises with cost). The task level
    # meets 0.85 by mixing s2 (0.8) with s1 (0.9): per prompt, only those two (and the
    # reference s0) may be chosen, not s3, whose noisy per-prompt weights would otherwise
    # win it the prompts they rate high.
    post = _posterior([0.95, 0.9, 0.8, 0.5], 400)
    cost = predict_costs(cost_table([40.0, 10.0, 4.0, 1.0]), post, 1)
    el = np.ones(4, dtype=bool)
    assert prompt_candidates(post, cost, el).tolist() == [True, True, True, True]
    assert prompt_candidates(post, cost, el, safe=0, target=0.85).tolist() == [
        True, True, True, False]
    # A target the cheapest meets alone: it and the reference.
    assert prompt_candidates(post, cost, el, safe=0, target=0.4).tolist() == [
        True, False, False, True]
    # None meets it: the best one (the reference here).
    assert prompt_candidates(post, cost, el, safe=0, target=0.99).tolist() == [
        True, False, False, False]
