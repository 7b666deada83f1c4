"""Constrained Thompson sampling: convergence, constraints, propensities, relaxation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conductor.bandit.policy import PolicyParams, ThompsonPolicy, predict_costs
from conductor.bandit.priors import policy_params
from conductor.bandit.simulate import cost_table, flat_posterior, run_bernoulli_world
from conductor.types import Constraints

QUALITIES = (0.95, 0.90, 0.70)
COSTS = (10.0, 2.0, 1.0)


@pytest.mark.slow
@pytest.mark.parametrize(("min_quality", "target"), [(0.85, 1), (0.93, 0)])
def test_converges_to_cheapest_strategy_above_the_bar(min_quality: float, target: int) -> None:
    shares = []
    for seed in range(20):
        picks = run_bernoulli_world(QUALITIES, COSTS, Constraints(min_quality=min_quality), seed)
        shares.append(float(np.mean(picks[-500:] == target)))
    print(f"min_quality={min_quality}: shares of the last 500 decisions {shares}")
    assert np.mean(shares) >= 0.90
    assert sum(s >= 0.60 for s in shares) >= 19


def test_latency_constraint_is_respected_once_learned() -> None:
    # Both good enough; the cheap one's p95 is 2x the limit.
    limit = 1000.0
    slow_median = 2 * limit / math.exp(1.645 * 0.2)
    picks = run_bernoulli_world((0.95, 0.95), (5.0, 1.0),
                                Constraints(min_quality=0.8, max_latency_ms=limit), seed=4,
                                n=1500, latencies_ms=(300.0, slow_median))
    assert np.mean(picks[500:] == 1) < 0.05
    assert np.mean(picks[:50] == 1) > 0.0  # it was tried while unknown


def test_without_a_quality_floor_quality_minus_price_of_cost_wins() -> None:
    table = cost_table([0.001, 0.0001])
    post = flat_posterior(table.names)
    for _ in range(300):
        post.observe_reward("s0", 1.0)
        post.observe_reward("s1", 0.0 if _ % 2 else 1.0)
    rng = np.random.default_rng(0)
    eligible = np.ones(2, dtype=bool)
    cheap_wins = ThompsonPolicy(PolicyParams(quality_per_usd=1.0)).choice_probabilities(
        post, table, eligible, Constraints(), 1, 1.0, rng)
    assert cheap_wins[0] > 0.99  # 0.5 quality points are worth more than $0.0009
    pricey = ThompsonPolicy(PolicyParams(quality_per_usd=10_000.0)).choice_probabilities(
        post, table, eligible, Constraints(), 1, 1.0, rng)
    assert pricey[1] > 0.99  # at $1 = 10,000 quality points, the saving dominates


def test_propensity_matches_empirical_choice_frequency() -> None:
    table = cost_table([3.0, 2.0, 1.0])
    post = flat_posterior(table.names, latency_ms=400.0)
    world = np.random.default_rng(11)
    for name, q, n in (("s0", 0.93, 40), ("s1", 0.88, 25), ("s2", 0.8, 15)):
        for _ in range(n):
            post.observe_reward(name, float(world.random() < q))
            post.observe_outcome(name, 400.0 * math.exp(world.normal(0, 0.3)), 1, None, 1.0)
    c = Constraints(min_quality=0.85, max_latency_ms=900.0)
    eligible = np.ones(3, dtype=bool)
    policy = ThompsonPolicy(PolicyParams(propensity_draws=4000))
    probs = policy.choice_probabilities(post, table, eligible, c, 1, 1.0,
                                        np.random.default_rng(1))
    rng = np.random.default_rng(2)
    counts = np.bincount([policy.decide(post, table, eligible, c, 1, 1.0, rng).index
                          for _ in range(20_000)], minlength=3) / 20_000
    print("propensities", probs, "empirical", counts)
    assert np.all(np.abs(probs - counts) < 0.02)
    assert probs.sum() == pytest.approx(1.0)
    assert min(probs) > 0.02  # a context where all three really compete


def test_temperature_zero_is_greedy_with_exact_propensity() -> None:
    table = cost_table([2.0, 1.0])
    post = flat_posterior(table.names)
    for _ in range(50):
        post.observe_reward("s0", 1.0)
        post.observe_reward("s1", 1.0 if _ % 3 else 0.0)  # mean ~0.66
    policy = ThompsonPolicy(PolicyParams())
    c = Constraints(min_quality=0.8)
    eligible = np.ones(2, dtype=bool)
    rng = np.random.default_rng(0)
    assert {policy.decide(post, table, eligible, c, 1, 0.0, rng).index for _ in range(50)} == {0}
    probs = policy.choice_probabilities(post, table, eligible, c, 1, 0.0, rng)
    np.testing.assert_array_equal(probs, [1.0, 0.0])


def test_higher_temperature_explores_more() -> None:
    table = cost_table([2.0, 1.0])
    post = flat_posterior(table.names)
    for k in range(60):
        post.observe_reward("s0", 1.0 if k % 20 else 0.0)
        post.observe_reward("s1", 1.0 if k % 4 else 0.0)  # 0.75 < bar
    policy = ThompsonPolicy(PolicyParams(wide_posterior_trials=0))
    c = Constraints(min_quality=0.85)
    eligible = np.ones(2, dtype=bool)
    rng = np.random.default_rng(0)
    p_cold = policy.choice_probabilities(post, table, eligible, c, 1, 0.3, rng)[1]
    p_hot = policy.choice_probabilities(post, table, eligible, c, 1, 3.0, rng)[1]
    assert p_cold < 0.02 < 0.08 < p_hot


def test_relaxed_choice_when_nothing_can_meet_the_constraints() -> None:
    table = cost_table([2.0, 1.0])
    post = flat_posterior(table.names)
    for k in range(200):
        post.observe_reward("s0", 1.0 if k % 5 else 0.0)  # 0.8
        post.observe_reward("s1", 1.0 if k % 2 else 0.0)  # 0.5
    choice = ThompsonPolicy(PolicyParams()).decide(
        post, table, np.ones(2, dtype=bool), Constraints(min_quality=0.99), 1, 1.0,
        np.random.default_rng(0))
    assert choice.relaxed
    assert choice.index == 0  # the one most likely to reach the bar
    assert not choice.feasible.any()


def test_ineligible_strategies_are_never_chosen() -> None:
    table = cost_table([3.0, 2.0, 1.0])
    post = flat_posterior(table.names)
    eligible = np.array([True, True, False])
    probs = ThompsonPolicy(PolicyParams()).choice_probabilities(
        post, table, eligible, Constraints(min_quality=0.1), 1, 1.0, np.random.default_rng(0))
    assert probs[2] == 0.0
    assert probs.sum() == pytest.approx(1.0)


def test_a_decisions_feasibility_row_cannot_write_through_to_the_eligible_mask() -> None:
    # With no constraint to apply, a decision's feasibility row is the caller's eligible
    # mask itself, seen as one row (no copy, on the request path): a read-only view, so a
    # change to the trace's row cannot change which strategies the router may use.
    table = cost_table([3.0, 2.0, 1.0])
    post = flat_posterior(table.names)
    eligible = np.array([True, True, False])
    for t in (0.0, 1.0):
        choice = ThompsonPolicy(PolicyParams()).decide(
            post, table, eligible, Constraints(), 1, t, np.random.default_rng(0))
        assert choice.feasible.tolist() == [True, True, False]
        with pytest.raises(ValueError, match="read-only"):
            choice.feasible[2] = True
        assert eligible.tolist() == [True, True, False]


def test_cost_prediction_uses_tokens_prices_discount_and_escalation() -> None:
    from conductor.bandit.policy import StrategyTable
    from conductor.bandit.posterior import Prior, TaskPosterior
    names = ("cheap", "strong", "batch", "verified")
    table = StrategyTable(
        names=names, input_price=(1e-6, 1e-5, 1e-6, 1e-6), output_price=(2e-6, 3e-5, 2e-6, 2e-6),
        discount=(1.0, 1.0, 0.5, 1.0), extra_latency_ms=(0, 0, 200, 0),
        draft=(-1, -1, -1, 0), escalate=(-1, -1, -1, 1), judge=0,
        judge_overhead_tokens=100.0, judge_output_tokens=5.0)
    prior = Prior(quality_alpha=1, quality_beta=1, latency_mu=5.0, output_tokens=50.0,
                  escalation_rate=0.25)
    post = TaskPosterior(list(names), [prior] * 4)
    cost = predict_costs(table, post, 1000)
    cheap = 1000 * 1e-6 + 50 * 2e-6
    strong = 1000 * 1e-5 + 50 * 3e-5
    judge = (1000 + 50 + 100) * 1e-6 + 5 * 2e-6
    np.testing.assert_allclose(cost, [cheap, strong, cheap * 0.5, cheap + judge + 0.25 * strong])


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("max_latency", [None, 700.0, 2000.0])
def test_exact_propensities_agree_with_monte_carlo(t: float, max_latency: float | None) -> None:
    table = cost_table([4.0, 3.0, 2.0, 1.0])
    post = flat_posterior(table.names, latency_ms=400.0)
    world = np.random.default_rng(5)
    for name, q, n, lat in (("s0", 0.95, 60, 300.0), ("s1", 0.9, 8, 500.0),
                            ("s2", 0.86, 30, 800.0), ("s3", 0.7, 25, 350.0)):
        for _ in range(n):  # s1 has few observations: the wide-posterior guard is active
            post.observe_reward(name, float(world.random() < q))
            post.observe_outcome(name, lat * math.exp(world.normal(0, 0.4)), 1, None, 1.0)
    c = Constraints(min_quality=0.85, max_latency_ms=max_latency)
    eligible = np.ones(4, dtype=bool)
    policy = ThompsonPolicy(PolicyParams())
    exact = policy.choice_probabilities(post, table, eligible, c, 1, t,
                                        np.random.default_rng(0), method="exact")
    mc = policy.choice_probabilities(post, table, eligible, c, 1, t, np.random.default_rng(1),
                                     draws=200_000, method="mc")
    print("exact", exact.round(4), "mc", mc.round(4))
    assert exact.sum() == pytest.approx(1.0)
    assert np.all(np.abs(exact - mc) < 0.006)


def _young_and_old_posterior(table_size: int = 4) -> tuple:
    """s1 and s3 young (the wide-posterior guard is on, and at a high temperature their
    densities are unbounded at 1), s0 and s2 well measured."""
    table = cost_table([4e-4, 3e-4, 2e-4, 1e-4][:table_size])
    post = flat_posterior(table.names, latency_ms=400.0)
    world = np.random.default_rng(5)
    for name, q, n, lat in (("s0", 0.95, 60, 300.0), ("s1", 0.9, 8, 500.0),
                            ("s2", 0.86, 300, 800.0), ("s3", 0.7, 25, 350.0)):
        for _ in range(n):
            post.observe_reward(name, float(world.random() < q))
            post.observe_outcome(name, lat * math.exp(world.normal(0, 0.4)), 1, None, 1.0)
    return table, post


@pytest.mark.parametrize("t", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("max_latency", [None, 700.0, 500.0])
@pytest.mark.parametrize("quality_per_usd", [0.0, 400.0])
def test_exact_propensities_without_a_floor_agree_with_monte_carlo(
        t: float, max_latency: float | None, quality_per_usd: float) -> None:
    # Without a floor the rule is "most quality net of priced cost"; its propensity is a
    # one-dimensional integral (the plain request's path), not 4,000 draws. At 500 ms no
    # strategy is feasible in about 40% of the draws: the relaxed choice takes those.
    table, post = _young_and_old_posterior()
    c = Constraints(max_latency_ms=max_latency)
    eligible = np.ones(4, dtype=bool)
    policy = ThompsonPolicy(PolicyParams(quality_per_usd=quality_per_usd))
    exact = policy.choice_probabilities(post, table, eligible, c, 1, t,
                                        np.random.default_rng(0), method="exact")
    mc = policy.choice_probabilities(post, table, eligible, c, 1, t, np.random.default_rng(1),
                                     draws=400_000, method="mc")
    print("exact", exact.round(4), "mc", mc.round(4))
    assert exact.sum() == pytest.approx(1.0, abs=0.003)
    assert np.all(np.abs(exact - mc) < 0.004)
    if max_latency != 500.0:
        assert 0.05 < exact.max() < 0.95  # a real contest, not a foregone one


def test_exact_propensity_without_a_floor_follows_the_posterior() -> None:
    # The quality tables are remembered per posterior: a reward must change the answer
    # exactly as a fresh policy computes it.
    table, post = _young_and_old_posterior()
    eligible = np.ones(4, dtype=bool)
    policy = ThompsonPolicy(PolicyParams())
    before = policy.choice_probabilities(post, table, eligible, Constraints(), 1, 1.0,
                                         np.random.default_rng(0))
    for _ in range(30):
        post.observe_reward("s1", 0.0)
    after = policy.choice_probabilities(post, table, eligible, Constraints(), 1, 1.0,
                                        np.random.default_rng(0))
    fresh = ThompsonPolicy(PolicyParams()).choice_probabilities(
        post, table, eligible, Constraints(), 1, 1.0, np.random.default_rng(0))
    np.testing.assert_array_equal(after, fresh)
    assert after[1] < before[1] - 0.1  # s1 failed 30 times: it is chosen far less


@pytest.mark.parametrize("t", [0.5, 1.0])
def test_a_decision_draws_each_quality_from_its_tempered_beta_posterior(t: float) -> None:
    """The decision's draw is Beta(alpha / t, beta / t) per strategy, in strategy order
    from the given stream: the same numbers numpy's vectorised draw gives (the decision
    draws one row value by value because that is faster)."""
    table = cost_table([3.0, 2.0, 1.0])
    post = flat_posterior(table.names)
    for name, wins, losses in (("s0", 40, 3), ("s1", 7, 9), ("s2", 2, 30)):
        for r in [1.0] * wins + [0.0] * losses:
            post.observe_reward(name, r)
    a, b = post.quality_params()
    policy = ThompsonPolicy(PolicyParams(wide_posterior_trials=0))
    for seed in range(5):
        choice = policy.decide(post, table, np.ones(3, dtype=bool), Constraints(), 1, t,
                               np.random.default_rng(seed))
        expected = np.random.default_rng(seed).beta(a / t, b / t, size=(1, 3))[0]
        np.testing.assert_array_equal(choice.quality, expected)


def test_gamma_quantiles_are_exact_for_small_shapes_and_close_for_large() -> None:
    """The latency quadrature's quantiles of sigma^2: scipy's inverse below a shape of 10,
    the Wilson-Hilferty cube above (a posterior's shape grows by a half per observation)."""
    from scipy import special

    from conductor.bandit.policy import gamma_upper_quantiles
    shapes = np.array([0.7, 3.0, 9.9, 10.0, 25.0, 100.0, 4000.0])
    u = (np.arange(64) + 0.5) / 64.0
    exact = special.gammainccinv(shapes[None, :], u[:, None])
    ours = gamma_upper_quantiles(shapes)
    np.testing.assert_array_equal(ours[:, :3], exact[:, :3])
    rel = np.abs(ours[:, 3:] / exact[:, 3:] - 1.0).max(axis=0)
    assert np.all(rel < [6e-3, 1e-3, 1e-4, 1e-6]) and np.all(np.diff(rel) < 0)


def test_every_policy_setting_of_the_config_reaches_the_policy() -> None:
    # Each [policy] setting the policy reads, set away from its default, arrives there
    # (a setting added to the config but not passed on would silently keep the default).
    import msgspec

    from conductor.config import PolicyConfig

    shared = [f for f in PolicyParams.__struct_fields__ if f in PolicyConfig.__struct_fields__]
    assert len(shared) >= 15
    default = PolicyConfig(default_strategy="s0")
    moved = {f: (getattr(default, f) + 1 if isinstance(getattr(default, f), int)
                 else getattr(default, f) * 0.5) for f in shared}
    config = msgspec.convert({"default_strategy": "s0", **moved}, PolicyConfig)
    params = policy_params(config)
    assert {f: getattr(params, f) for f in shared} == moved
