"""The learner: one apply(event) for outcomes, rewards and policy changes."""

from __future__ import annotations

import math
from pathlib import Path

import msgspec
import pytest

from conductor import default_settings
from conductor.bandit.priors import build_priors
from conductor.learning import Learner
from conductor.storage.base import MemoryLogStore
from conductor.types import OutcomeEvent, PolicyEvent, PolicyKnobs, RewardEvent


def _learner() -> Learner:
    s = default_settings()
    return Learner(s, build_priors(s), MemoryLogStore())


def test_the_batch_window_is_taken_out_of_observed_latency() -> None:
    """The policy adds the window to its latency prediction, so the posterior must model
    the rest: a 1,200 ms batch answer with a 200 ms window is learned as 1,000 ms."""
    ln = _learner()
    post = ln.posteriors["classify"]
    ln.apply(OutcomeEvent(request_id="r", task_type="classify", strategy="batch-cheap",
                          latency_ms=1200.0, output_tokens=5))
    ln.apply(OutcomeEvent(request_id="s", task_type="classify", strategy="turbo-cheap",
                          latency_ms=1200.0, output_tokens=5))
    i, j = post.index["batch-cheap"], post.index["turbo-cheap"]
    gamma = ln.gamma
    assert post.evidence["lat_sx"][i] == pytest.approx(math.log(1000.0) * gamma)
    assert post.evidence["lat_sx"][j] == pytest.approx(math.log(1200.0))


def test_a_failed_outcome_teaches_no_latency_or_tokens() -> None:
    ln = _learner()
    post = ln.posteriors["chat"]
    ln.apply(OutcomeEvent(request_id="r", task_type="chat", strategy="turbo-cheap",
                          latency_ms=50.0, output_tokens=9, error="ProviderServerError: 500"))
    i = post.index["turbo-cheap"]
    assert post.evidence["lat_n"][i] == 0 and post.evidence["tok_n"][i] == 0
    assert post.observations == 1.0


def test_rewards_observe_then_correct_by_the_difference() -> None:
    ln = _learner()
    post = ln.posteriors["chat"]
    i = post.index["turbo-cheap"]
    ln.apply(RewardEvent(request_id="r", task_type="chat", strategy="turbo-cheap",
                         effective=0.25))
    ln.apply(RewardEvent(request_id="r", task_type="chat", strategy="turbo-cheap",
                         effective=1.0, previous=0.25))
    assert (post.evidence["q_s"][i], post.evidence["q_f"][i]) == pytest.approx((1.0, 0.0))


def test_events_for_what_is_no_longer_configured_are_skipped() -> None:
    ln = _learner()
    before = ln.state()
    ln.apply(OutcomeEvent(request_id="r", task_type="poetry", strategy="turbo-cheap",
                          latency_ms=10.0))
    ln.apply(RewardEvent(request_id="r", task_type="chat", strategy="gone", effective=1.0))
    assert ln.state() == before


def test_a_policy_event_sets_the_knobs_and_unknown_names_fall_back() -> None:
    ln = _learner()
    knobs = PolicyKnobs(version="v9", rollout_percent=10.0, default_strategy="removed",
                        freeze=True, exploration={"chat": 0.3, "poetry": 2.0})
    ln.apply(PolicyEvent(knobs=knobs))
    assert ln.knobs.version == "v9" and ln.knobs.freeze and ln.knobs.rollout_percent == 10.0
    assert ln.knobs.default_strategy == "turbo-quality"  # the config's
    assert ln.knobs.exploration["chat"] == 0.3 and "poetry" not in ln.knobs.exploration


def test_a_probes_rewards_teach_quality_but_never_the_targets_window(tmp_path: Path) -> None:
    """A probe's first reward and a correction of it (a later, better source) move the
    posterior and leave the target's sums alone; so does a reward for a probe whose fused
    state was rebuilt from the store (after a restart), which knows it by its decision."""
    from conductor import Conductor
    from conductor.probing import probe_id
    from conductor.storage.sqlite import SQLiteStore
    from conductor.types import Reward

    path = tmp_path / "c.db"
    with Conductor(seed=1, log_store=SQLiteStore(path), evaluators=[]) as c:
        served = c.complete("Classify: fine", task_type="classify", strategy="turbo-quality")
        assert c.wait_for_judges()  # its own judged reward, if sampled, is in
        probe = msgspec.structs.replace(served.decision, request_id=probe_id(
            served.request_id), strategy="turbo-cheap", routed_by="probe", propensity=1.0)
        c.log_store.record_decision(probe, c.make_request("Classify: fine",
                                                          task_type="classify"))
        c.learner.fusion.start(probe.request_id, served=False)
        target, post = c.learner.targets["classify"], c.posteriors["classify"]
        sums = (target.count, target.reward_sum)  # the served answer's
        i = post.index["turbo-cheap"]

        def reward(source: str, score: float) -> None:
            c.learner.add_reward(Reward(
                request_id=probe.request_id, source=source, score=score, rater="u",
                task_type="classify", strategy="turbo-cheap", created_at=1.0))

        reward("judge", 0.0)
        assert post.evidence["j_n"][i] == pytest.approx(1.0)
        assert (target.count, target.reward_sum) == sums
        reward("user", 1.0)  # replaces the judge's 0: the posterior is corrected
        assert post.evidence["q_s"][i] == pytest.approx(1.0) and post.evidence["j_n"][i] == 0
        assert (target.count, target.reward_sum) == sums
    with Conductor(seed=1, log_store=SQLiteStore(path), evaluators=[]) as again:
        target = again.learner.targets["classify"]
        assert (target.count, target.reward_sum) == pytest.approx(sums)  # rebuilt alike
        again.learner.add_reward(Reward(
            request_id=probe.request_id, source="user", score=0.0, rater="v",
            task_type="classify", strategy="turbo-cheap", created_at=2.0))
        assert (target.count, target.reward_sum) == pytest.approx(sums)
        post = again.posteriors["classify"]
        assert post.evidence["q_s"][post.index["turbo-cheap"]] == pytest.approx(0.5)


def test_a_label_replacing_a_judged_reward_corrects_the_per_prompt_model() -> None:
    """The correction reaches the per-prompt model too: the judged reward leaves its
    judged sums for the labelled ones (and a probe's correction does the same)."""
    s = default_settings()
    s = msgspec.structs.replace(s, policy=msgspec.structs.replace(s.policy, context=True))
    ln = Learner(s, build_priors(s), MemoryLogStore())
    model = ln.contexts["chat"]
    i = model.index["turbo-cheap"]
    z = tuple(float(x) for x in range(model.size))
    for served in (True, False):
        ln.apply(RewardEvent(request_id=f"r{served}", task_type="chat",
                             strategy="turbo-cheap", effective=0.0, features=z, judged=True,
                             served=served))
        ln.apply(RewardEvent(request_id=f"r{served}", task_type="chat",
                             strategy="turbo-cheap", effective=1.0, previous=0.0,
                             features=z, judged=False, previous_judged=True, served=served))
    assert model.jn[i] == pytest.approx(0.0) and model.n[i] == pytest.approx(2.0, rel=1e-3)
    assert model.sr[i] == pytest.approx(2.0, rel=1e-3)  # the first decayed by one reward
