"""The contextual posterior: exact Bayesian linear regression from sufficient statistics."""

from __future__ import annotations

import numpy as np
import pytest

from conductor.bandit.context import ContextModel


def _model(size: int = 3) -> ContextModel:
    return ContextModel(["a", "b"], size, prior_mean=np.array([0.5, 0.7]),
                        prior_sd=np.array([0.2, 0.3]), prior_std=0.5, noise_var=0.25,
                        recentre_every=7)


def test_the_posterior_is_the_ridge_solution_with_the_task_prior(rng) -> None:
    m = _model()
    zs = rng.normal(size=(40, 3))
    ys = (rng.random(40) < 0.5 + 0.3 * np.tanh(zs[:, 0])).astype(float)
    for z, y in zip(zs, ys, strict=True):
        m.observe("a", z, float(y), 1.0)
    mean, cov = m.posterior()
    x = np.c_[np.ones(40), zs - m.center]
    prior_prec = np.diag([1 / 0.2 ** 2] + [1 / 0.5 ** 2] * 3)
    a = prior_prec + x.T @ x / 0.25
    expected = np.linalg.solve(a, prior_prec @ np.r_[0.5, 0, 0, 0] + x.T @ ys / 0.25)
    np.testing.assert_allclose(mean[0], expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cov[0], np.linalg.inv(a), rtol=1e-9, atol=1e-12)
    many = m.predict_means(zs[:5])  # the batched form the prompt price uses
    np.testing.assert_allclose(many, [m.predict(z)[0] for z in zs[:5]], atol=1e-12)
    # The other strategy saw nothing: its prior (the task level's).
    assert mean[1].tolist() == pytest.approx([0.7, 0, 0, 0])
    assert m.predict(zs[0])[0][1] == pytest.approx(0.7)


def test_a_correction_replaces_a_reward_and_state_round_trips(rng) -> None:
    m, again = _model(), _model()
    zs = rng.normal(size=(20, 3))
    for k, z in enumerate(zs):
        m.observe("b", z, 0.0 if k == 5 else 1.0, 1.0)
        again.observe("b", z, 1.0, 1.0)
    m.correct("b", zs[5], 0.0, 1.0)  # the user said the 6th answer was right after all
    np.testing.assert_allclose(m.predict(zs[0])[0], again.predict(zs[0])[0], atol=1e-12)
    restored = _model()
    assert restored.load(m.to_dict()) == []
    np.testing.assert_array_equal(restored.predict(zs[0])[0], m.predict(zs[0])[0])
    assert _model(size=4).load(m.to_dict()) == [
        "contextual state does not match the feature size; reset"]
    bad = m.to_dict()
    bad["szz"][1][0][0] = float("nan")
    assert _model().load(bad) == ["b: bad contextual state; reset"]


def test_the_prequential_score_says_when_the_prompt_helps(rng) -> None:
    informative, useless = _model(), _model()
    for _ in range(400):
        z = rng.normal(size=3)
        y = float(rng.random() < (0.9 if z[0] > 0 else 0.2))
        informative.observe("a", z, y, 1.0, baseline=0.55)
        useless.observe("a", z, float(rng.random() < 0.55), 1.0, baseline=0.55)
    assert informative.advantage() > 0.05  # the features explain most of the variance
    assert useless.advantage() < 0.005


def test_the_comparison_is_charged_for_the_final_reward_not_the_provisional_one(rng) -> None:
    """Every answer first gets a heuristic 1.0, then the judge's 0 or 1. Scored on the 1.0s,
    a model that knows which prompts fail looks worse than the task mean; scored on the
    judge's values it is much better, and opens."""
    m = _model(size=2)
    m.min_rewards = 50
    hard, easy = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    for _ in range(400):
        is_hard = rng.random() < 0.4
        z = hard if is_hard else easy
        final = float(rng.random() < (0.2 if is_hard else 0.95))
        m.observe("b", z, 1.0, 1.0, baseline=0.65)
        m.correct("b", z, 1.0, final, baseline=0.65)
    assert m.advantage() > 0.05
    assert m.active


def test_a_gate_set_to_open_below_zero_stays_open_while_the_gain_stays_above_it(rng) -> None:
    """``context_min_gain`` may be negative (decide per prompt even at a small cost in
    accuracy). Features that are pure noise cost accuracy (a negative gain); the gate
    opens at -1 and must not close at 0 on the next reward, flipping the decisions
    between the two regimes on every observation."""
    m = _model()
    m.open_gain, m.min_rewards = -1.0, 20
    states = []
    for _ in range(300):
        m.observe("a", rng.normal(size=3), float(rng.random() < 0.5), 1.0, baseline=0.5)
        states.append(m.active)
    assert m.advantage() < 0.0  # the noise features do cost accuracy here
    assert all(states[30:])
