"""Conjugate updates against scipy on known data; decay; persistence and repair."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, stats

from conductor.bandit.posterior import PosteriorState, Prior, TaskPosterior


def _post(**kw: float) -> TaskPosterior:
    prior = Prior(quality_alpha=kw.get("a", 2.0), quality_beta=kw.get("b", 3.0),
                  latency_mu=kw.get("mu", 6.0), latency_kappa=kw.get("kappa", 1.5),
                  latency_a=kw.get("la", 3.0), latency_b=kw.get("lb", 0.5))
    return TaskPosterior(["s"], [prior])


def test_fractional_beta_update_matches_numeric_posterior() -> None:
    rewards = [1.0, 0.0, 0.7, 0.3, 1.0, 0.9]
    post = _post(a=2.0, b=3.0)
    for r in rewards:
        post.observe_reward("s", r)
    a, b = post.quality_params()
    # Fractional Bernoulli likelihood: prod q^r (1-q)^(1-r), times the Beta(2, 3) prior.
    grid = np.linspace(1e-6, 1 - 1e-6, 200_001)
    log_post = stats.beta(2.0, 3.0).logpdf(grid) + sum(
        r * np.log(grid) + (1 - r) * np.log1p(-grid) for r in rewards)
    w = np.exp(log_post - log_post.max())
    w /= integrate.trapezoid(w, grid)
    mean = integrate.trapezoid(grid * w, grid)
    var = integrate.trapezoid((grid - mean) ** 2 * w, grid)
    assert a[0] == pytest.approx(2.0 + sum(rewards))
    assert b[0] == pytest.approx(3.0 + len(rewards) - sum(rewards))
    assert post.quality_mean()[0] == pytest.approx(mean, abs=1e-6)
    assert post.quality_std()[0] ** 2 == pytest.approx(var, rel=1e-4)
    assert stats.beta(a[0], b[0]).mean() == pytest.approx(mean, abs=1e-6)


def test_normal_inverse_gamma_update_matches_numeric_posterior() -> None:
    latencies = [420.0, 515.0, 380.0, 610.0, 455.0, 700.0, 390.0]
    mu0, kappa0, a0, b0 = 6.0, 1.5, 3.0, 0.5
    post = _post(mu=mu0, kappa=kappa0, la=a0, lb=b0)
    for x in latencies:
        post.observe_outcome("s", x, None, None, 1.0)
    mu_n, kappa_n, a_n, b_n = (v[0] for v in post.latency_params())
    x = np.log(latencies)
    # Joint posterior of (mu, sigma^2) on a grid: N(mu | mu0, s2/kappa0) IG(s2 | a0, b0) L(x).
    mus = np.linspace(5.0, 7.5, 600)
    s2s = np.linspace(0.005, 1.5, 600)
    M, S2 = np.meshgrid(mus, s2s, indexing="ij")
    logp = (stats.norm.logpdf(M, mu0, np.sqrt(S2 / kappa0))
            + stats.invgamma.logpdf(S2, a0, scale=b0)
            + sum(stats.norm.logpdf(xi, M, np.sqrt(S2)) for xi in x))
    w = np.exp(logp - logp.max())
    w /= w.sum()
    assert mu_n == pytest.approx(float((M * w).sum()), abs=2e-3)
    assert b_n / (a_n - 1) == pytest.approx(float((S2 * w).sum()), rel=1e-2)
    # Closed form from Murphy (2007) eqs. 86-89.
    n, xbar = len(x), x.mean()
    assert kappa_n == pytest.approx(kappa0 + n)
    assert mu_n == pytest.approx((kappa0 * mu0 + n * xbar) / (kappa0 + n))
    assert a_n == pytest.approx(a0 + n / 2)
    assert b_n == pytest.approx(b0 + 0.5 * ((x - xbar) ** 2).sum()
                                + kappa0 * n * (xbar - mu0) ** 2 / (2 * (kappa0 + n)))


def test_decay_halves_old_evidence_at_the_half_life() -> None:
    half_life = 50
    gamma = 0.5 ** (1 / half_life)
    post = TaskPosterior(["old", "new"], [Prior(quality_alpha=1, quality_beta=1,
                                                 latency_mu=5.0)] * 2)
    for _ in range(10):
        post.observe_reward("old", 1.0)
    before = post.quality_trials()[0]
    for _ in range(half_life):
        post.observe_outcome("new", 100.0, 10, None, gamma)
    assert before == pytest.approx(10.0)
    assert post.quality_trials()[0] == pytest.approx(5.0, rel=1e-9)
    for _ in range(half_life):
        post.observe_outcome("new", 100.0, 10, None, gamma)
    assert post.quality_trials()[0] == pytest.approx(2.5, rel=1e-9)
    # Latency evidence of the newer strategy is decayed too, but keeps recent weight.
    assert 0 < post.evidence["lat_n"][1] < 2 * half_life


def test_output_tokens_and_escalation_are_running_means() -> None:
    post = TaskPosterior(["v"], [Prior(quality_alpha=1, quality_beta=1, latency_mu=5.0,
                                       output_tokens=100.0, output_tokens_weight=2.0,
                                       escalation_rate=0.5, escalation_weight=2.0)])
    for tokens, esc in [(10, True), (20, False), (30, False), (40, False)]:
        post.observe_outcome("v", 50.0, tokens, esc, 1.0)
    assert post.output_tokens()[0] == pytest.approx((100 * 2 + 100) / 6)
    assert post.escalation_rate()[0] == pytest.approx((0.5 * 2 + 1) / 6)


def _state() -> PosteriorState:
    prior = Prior(quality_alpha=2, quality_beta=2, latency_mu=6.0)
    return PosteriorState({"classify": {"a": prior, "b": prior}, "chat": {"a": prior}})


def test_state_round_trip_is_exact() -> None:
    s = _state()
    rng = np.random.default_rng(3)
    for _ in range(100):
        s["classify"].observe_outcome("a", float(rng.lognormal(6, 0.3)), int(rng.integers(1, 50)),
                                      None, 0.99)
        s["classify"].observe_reward("b", float(rng.random()))
    data = s.to_dict()
    t = _state()
    assert t.load(data) == []
    for f, arr in s["classify"].evidence.items():
        np.testing.assert_array_equal(arr, t["classify"].evidence[f])
    assert t.to_dict() == data


@pytest.mark.parametrize("bad", [float("nan"), 0.0, -3.0, float("inf"), "x", None])
def test_corrupt_state_is_repaired_to_the_prior_and_reported(bad: object) -> None:
    s = _state()
    s["classify"].observe_reward("a", 1.0)
    s["classify"].observe_reward("b", 1.0)
    data = s.to_dict()
    data["tasks"]["classify"]["evidence"]["q_s"][0] = bad
    data["tasks"]["classify"]["evidence"]["lat_n"][0] = -1.0 if bad == 0.0 else bad
    t = _state()
    problems = t.load(data)
    assert any("classify/a" in p for p in problems)
    a, b = t["classify"].quality_params()
    assert (a[0], b[0]) == (2.0, 2.0)  # strategy a reset to its prior
    assert a[1] == 3.0  # strategy b kept its evidence
    assert all(math.isfinite(v) for v in t["classify"].quality_mean())


def test_garbage_state_loads_as_priors() -> None:
    t = _state()
    assert t.load("not a state") != []
    assert t.load({"tasks": {"classify": 5}}) == ["classify: not a mapping; reset to prior"]
    assert t["classify"].quality_mean()[0] == 0.5
