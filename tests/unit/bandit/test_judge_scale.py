"""Judged rewards kept apart and read through the judge's error rates: in the task-level
posterior, the target's sums and the per-prompt model."""

from __future__ import annotations

import numpy as np
import pytest

from conductor.bandit.context import ContextModel
from conductor.bandit.posterior import JudgeScale, Prior, TaskPosterior
from conductor.bandit.targets import TargetState

LENIENT = JudgeScale(fp=0.3, informativeness=0.65)  # false negatives 0.05


def _posterior() -> TaskPosterior:
    prior = Prior(quality_alpha=1.0, quality_beta=1.0, latency_mu=5.0)
    return TaskPosterior(["cheap", "strong"], [prior, prior])


def test_judged_rewards_are_read_through_the_scale_in_force() -> None:
    post = _posterior()
    for k in range(100):  # a mean judged score of 0.7
        post.observe_judged("cheap", 1.0 if k < 70 else 0.0)
    post.observe_reward("cheap", 1.0)  # one user's label
    assert post.quality_mean()[0] == pytest.approx((1 + 70 + 1) / (2 + 100 + 1))
    post.set_judge_scale(LENIENT)
    q = (0.7 - 0.3) / 0.65  # Rogan-Gladen: 0.615
    w = 0.65 ** 2 * 100  # each judged reward is worth informativeness^2 of a label
    assert post.quality_mean()[0] == pytest.approx((1 + w * q + 1) / (2 + w + 1))
    assert post.quality_trials()[0] == pytest.approx(w + 1)
    assert post.judged_quality()[0] == pytest.approx(0.7)
    assert np.isnan(post.judged_quality()[1])
    post.set_judge_scale(None)  # back to the judge's own scale
    assert post.quality_mean()[0] == pytest.approx(72 / 103)


def test_a_label_replacing_a_judged_score_moves_the_reward_out_of_the_judged_ones() -> None:
    post = _posterior()
    post.set_judge_scale(LENIENT)
    for _ in range(10):
        post.observe_judged("cheap", 1.0)
    post.correct_reward("cheap", 1.0, 0.0, was_judged=True, judged=False)
    e = post.evidence
    assert (e["j_n"][0], e["j_s"][0], e["q_s"][0], e["q_f"][0]) == (9.0, 9.0, 0.0, 1.0)
    post.correct_reward("cheap", 0.0, 1.0)  # the user changes their mind
    assert (e["q_s"][0], e["q_f"][0]) == (1.0, 0.0)
    post.correct_reward("cheap", 1.0, 0.0, was_judged=True, judged=True)  # re-judged
    assert (e["j_n"][0], e["j_s"][0]) == (9.0, 8.0)
    post.correct_reward("cheap", 1.0, 0.5, was_judged=False, judged=True)
    assert (e["j_n"][0], e["j_s"][0], e["q_s"][0], e["q_f"][0]) == (10.0, 8.5, 0.0, 0.0)


def test_snapshots_from_before_judged_evidence_load_without_complaint() -> None:
    post = _posterior()
    saved = post.to_dict()
    for f in ("j_n", "j_s"):
        del saved["evidence"][f]
    saved["evidence"]["q_s"] = [3.0, 4.0]
    assert post.load_evidence(saved) == []
    assert list(post.evidence["q_s"]) == [3.0, 4.0] and list(post.evidence["j_n"]) == [0, 0]
    saved["evidence"]["j_n"] = [float("nan"), 1.0]
    assert post.load_evidence(saved) == ["cheap: bad j_n; reset to prior"]


def test_the_targets_sum_recounts_judged_rewards_when_the_scale_moves() -> None:
    state = TargetState()
    for k in range(100):
        state.observe(1.0 if k < 70 else 0.0, 1.0, judged="cheap", scale=None)
    state.observe(1.0, 1.0)  # a labelled one
    assert state.mean() == pytest.approx(71 / 101)
    state.recount("cheap", LENIENT)
    q = (0.7 - 0.3) / 0.65
    assert state.mean() == pytest.approx((100 * q + 1) / 101)
    # A label replaces one judged pass: the judged ones lose it, the label counts as is.
    state.correct(1.0, 0.0, strategy="cheap", was_judged=True, judged=False, scale=LENIENT)
    q = (69 / 99 - 0.3) / 0.65
    assert state.mean() == pytest.approx((99 * q + 1) / 101)
    assert state.judged["cheap"].n == 99 and state.count == 101
    state.recount("cheap", None)
    assert state.mean() == pytest.approx((69 + 1) / 101)


def test_the_targets_judged_sums_decay_with_the_window() -> None:
    state = TargetState()
    state.observe(1.0, 1.0, judged="cheap")
    state.observe(0.0, 0.5)
    assert state.judged["cheap"].n == 0.5 and state.judged["cheap"].counted == 0.5
    assert state.reward_sum == 0.5 and state.count == 1.5


def test_the_per_prompt_model_reads_judged_rewards_on_the_true_scale() -> None:
    """Judged scores that are an exact linear image of the truth (fp + informativeness x
    right), read through the scale, teach the same model as the truth itself."""
    rng = np.random.default_rng(3)
    z = rng.normal(size=(400, 4))
    right = (z[:, 0] > 0).astype(float)  # prompts with a positive first feature
    kw = {"prior_mean": np.array([0.5, 0.5]), "prior_sd": np.array([0.3, 0.3])}
    truth, judged = (ContextModel(["cheap", "strong"], 4, **kw) for _ in range(2))
    judged.set_scale(LENIENT)
    for x, y in zip(z, right, strict=True):
        truth.observe("cheap", x, y, 0.999, baseline=0.5)
        judged.observe("cheap", x, 0.3 + 0.65 * y, 0.999, baseline=0.5, judged=True)
    probe = rng.normal(size=(20, 4))
    assert np.allclose(truth.predict_means(probe), judged.predict_means(probe), atol=1e-9)
    assert truth.advantage() == pytest.approx(judged.advantage())
    # A label replacing one judged score: the same as that label learned from the start.
    truth.correct("cheap", z[0], right[0], 1.0 - right[0])
    judged.correct("cheap", z[0], 0.3 + 0.65 * right[0], 1.0 - right[0], was_judged=True)
    assert np.allclose(truth.predict_means(probe), judged.predict_means(probe), atol=1e-9)
    judged.set_scale(None)  # on the judge's scale the model is compressed towards fp
    spread = np.ptp(judged.predict_means(probe)[:, 0])
    assert spread < 0.8 * np.ptp(truth.predict_means(probe)[:, 0])
    saved = judged.to_dict()
    again = ContextModel(["cheap", "strong"], 4, **kw)
    assert again.load(saved) == []
    again.set_scale(LENIENT)
    judged.set_scale(LENIENT)
    assert np.allclose(again.predict_means(probe), judged.predict_means(probe), atol=1e-9)


def test_a_shared_output_token_prior_is_centred_on_every_strategys_answers() -> None:
    """An untried strategy with the task type's default (256) is priced at the lengths
    the tried ones wrote: (256 x 2 + 300) / (2 + 100) = 7.96 after 100 answers of 3
    tokens. A strategy with a prior of its own keeps it."""
    shared = Prior(quality_alpha=1.0, quality_beta=1.0, latency_mu=5.0, output_tokens=256.0,
                   output_tokens_shared=True)
    own = Prior(quality_alpha=1.0, quality_beta=1.0, latency_mu=5.0, output_tokens=900.0)
    post = TaskPosterior(["tried", "untried", "own"], [shared, shared, own])
    assert list(post.output_tokens()) == [256.0, 256.0, 900.0]
    for _ in range(100):
        post.observe_outcome("tried", 100.0, 3.0, None, 1.0)
    centre = (256 * 2 + 300) / 102
    tokens = post.output_tokens()
    assert tokens[1] == pytest.approx(centre)
    assert tokens[0] == pytest.approx((centre * 2 + 300) / 102)
    assert tokens[2] == 900.0
