"""Off-policy evaluation (coverage against live runs), calibration and tuning."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from conductor import Conductor, load_coefficients
from conductor.bandit.policy import PolicyParams, ThompsonPolicy
from conductor.bandit.posterior import Prior, TaskPosterior
from conductor.bandit.simulate import cost_table
from conductor.config import settings_from_dict
from conductor.errors import InvalidRequestError
from conductor.replay.harness import ReplayConfig
from conductor.replay.logs import LoggedRecord
from conductor.replay.offline import Candidate, calibrate, compare, tune_world, write_priors
from conductor.replay.world import build_world, read_rows
from conductor.types import Constraints

QUALITY = (0.95, 0.90, 0.70)
COSTS = (10.0, 2.0, 1.0)


def _settings():
    return settings_from_dict({
        "providers": {"p": {"kind": "demo"}},
        "models": {f"m{i}": {"provider": "p", "input_usd_per_1m": c * 1e6,
                             "output_usd_per_1m": 0.0} for i, c in enumerate(COSTS)},
        "strategies": {f"s{i}": {"model": f"m{i}", "prior_quality": 0.5} for i in range(3)},
        "policy": {"default_strategy": "s0"},
    })


def _logged(seed: int, n: int = 1500, t: float = 2.0) -> list[LoggedRecord]:
    """Traffic logged by constrained Thompson sampling, with its propensities."""
    rng = np.random.default_rng([seed, 1])
    world = np.random.default_rng([seed, 2])
    table = cost_table(COSTS)
    post = TaskPosterior(list(table.names), [Prior(quality_alpha=1, quality_beta=1,
                                                   latency_mu=5.0)] * 3)
    policy = ThompsonPolicy(PolicyParams())
    c = Constraints(min_quality=0.85)
    el = np.ones(3, dtype=bool)
    out = []
    for k in range(n):
        probs = policy.choice_probabilities(post, table, el, c, 1, t, rng)
        a = int(rng.choice(3, p=probs))
        q = float(world.random() < QUALITY[a])
        post.observe_outcome(table.names[a], 100.0, 1, None, 1.0)
        post.observe_reward(table.names[a], q)
        out.append(LoggedRecord(request_id=str(k), created_at=float(k), task_type="chat",
                                action=table.names[a], propensity=float(probs[a]),
                                routed_by="policy", min_quality=0.85, max_latency_ms=None,
                                max_cost_usd=None, input_tokens=1, executed=table.names[a],
                                quality=q, cost_usd=COSTS[a] * 1e-6 * 1, latency_ms=100.0,
                                output_tokens=1))
    return out


@pytest.mark.slow
def test_ope_intervals_cover_the_live_value() -> None:
    settings = _settings()
    covered = {"snips": 0, "dr": 0}
    trials = 0
    for seed in range(20):
        records = _logged(seed)
        cands = [Candidate.parse("strategy=s1"), Candidate.parse("strategy=s2"),
                 Candidate.parse("random")]
        res = compare(records, settings, cands, seed=seed, resamples=500)
        live_rng = np.random.default_rng([seed, 3])
        live = {"strategy=s1": float(np.mean(live_rng.random(2000) < QUALITY[1])),
                "strategy=s2": float(np.mean(live_rng.random(2000) < QUALITY[2])),
                "random": float(np.mean(live_rng.random(2000) < np.array(QUALITY)[
                    live_rng.integers(0, 3, 2000)]))}
        for spec, value in live.items():
            trials += 1
            for est in covered:
                e = getattr(res[spec]["quality"], est)
                covered[est] += e.low <= value <= e.high
    rates = {k: v / trials for k, v in covered.items()}
    print("coverage over", trials, "(seed, candidate) pairs:", rates)
    assert rates["dr"] >= 0.9 and rates["snips"] >= 0.9


def test_ope_basics_and_warnings() -> None:
    records = _logged(0, n=600)
    res = compare(records, _settings(), [Candidate.parse("strategy=s0"),
                                         Candidate.parse("temperature=0.5")])
    fixed = res["strategy=s0"]
    assert fixed["used_records"] == 600
    assert fixed["cost_usd"].dr.value == pytest.approx(10e-6, rel=0.2)
    assert fixed["quality"].ess < 600
    assert any("effective sample size" in w for w in fixed["quality"].warnings)
    ts = res["temperature=0.5"]["quality"]
    assert ts.dr.low <= ts.dr.value <= ts.dr.high
    with pytest.raises(InvalidRequestError, match="unknown strategy 'nope'"):
        compare(records, _settings(), [Candidate.parse("strategy=nope")])
    with pytest.raises(InvalidRequestError, match="unknown key 'colour'"):
        Candidate.parse("colour=red")


def test_calibrate_from_a_world_fits_capped_priors(tmp_path: Path, world_file: Path) -> None:
    w = build_world(read_rows([world_file]))
    result = calibrate(w, None, cap=20.0)
    small = result["priors"]["easy"]["small"]
    assert small.quality_alpha + small.quality_beta == pytest.approx(20.0)  # capped
    assert small.quality_alpha / 20.0 == pytest.approx(0.90, abs=0.05)
    assert result["priors"]["hard"]["small"].quality_alpha / 20.0 == pytest.approx(0.40,
                                                                                  abs=0.08)
    r = result["report"]
    assert r["holdout_loglik_per_obs_fitted"] > r["holdout_loglik_per_obs_default"]
    out = tmp_path / "priors.json"
    write_priors(result, out)
    loaded = load_coefficients(out)
    assert loaded["easy"]["small"] == small


def test_calibrated_priors_are_used_by_conductor(tmp_path: Path) -> None:
    from conductor.replay.logs import read_logged
    from conductor.storage.jsonl import JSONLLogStore

    log = tmp_path / "log.jsonl"
    c2 = Conductor(seed=2, log_store=JSONLLogStore(log))
    for _ in range(200):
        c2.complete("hello", task_type="classify")
    c2.close()
    result = calibrate(read_logged(log), c2.settings, cap=20.0)
    out = tmp_path / "p.json"
    write_priors(result, out)
    fresh = Conductor(seed=3, coefficients=load_coefficients(out))
    post = fresh.posteriors["classify"]
    fitted = result["priors"]["classify"]
    for s, prior in fitted.items():
        i = post.index[s]
        assert post.prior["q_a0"][i] == pytest.approx(prior.quality_alpha)
    # The strategy the log served most: its prior's mean is its mean logged reward, with
    # the weight capped at 20 observations.
    records = read_logged(log)
    served: dict[str, list[float]] = {}
    for r in records:
        if r.quality is not None:
            served.setdefault(r.executed or r.action, []).append(r.quality)
    most = max(served, key=lambda k: len(served[k]))
    assert len(served[most]) > 20
    prior = fitted[most]
    assert prior.quality_alpha + prior.quality_beta == pytest.approx(20.0)
    # Latency and output tokens are capped at the same weight, so live traffic moves them.
    assert prior.latency_kappa == pytest.approx(20.0)
    assert prior.latency_a == pytest.approx(1.0 + 20.0 / 2.0)
    assert prior.output_tokens_weight == pytest.approx(20.0)
    assert prior.quality_alpha / 20.0 == pytest.approx(
        min(0.99, max(0.01, float(np.mean(served[most])))))
    fresh.close()


def test_tune_recommends_a_temperature_per_task(world_file: Path) -> None:
    w = build_world(read_rows([world_file]))
    result = tune_world(w, ReplayConfig(seeds=1), temperatures=(0.0, 1.0))
    assert set(result["recommended"]) == {"easy", "hard"}
    for task, sweep in result["sweep"].items():
        assert set(sweep) == {"0.0", "1.0"}
        assert all(0 <= v["quality"] <= 1 for v in sweep.values())
        meeting = {t: v for t, v in sweep.items() if v["meets_bar"]} or sweep
        best = max(meeting, key=lambda t: meeting[t]["utility"])
        assert result["recommended"][task] == float(best)


@pytest.mark.parametrize(("content", "needle"), [
    ({"priors": {"classify": {}}}, "no priors in the file"),
    ({"priors": {"classify": {"turbo-cheap": {
        "quality_alpha": -1.0, "quality_beta": 2.0, "latency_mu": 6.9}}}}, "invalid prior"),
    ({"priors": {"poetry": {"turbo-cheap": {
        "quality_alpha": 1.0, "quality_beta": 2.0, "latency_mu": 6.9}}}},
     "unknown task type 'poetry'"),
    ([1, 2], "not a priors file"),
])
def test_a_priors_file_that_would_change_nothing_or_break_routing_is_refused(
        tmp_path: Path, content: object, needle: str) -> None:
    import json

    from conductor import default_settings
    from conductor.errors import ConfigError

    path = tmp_path / "priors.json"
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=re.escape(needle)):
        load_coefficients(path, default_settings())


def test_a_strategy_only_probed_is_estimated_from_its_probes() -> None:
    """The router serves s0 alone and probes the cheap s2 on every other request (judged,
    off the served stream). No served decision picks s2, so IPS and SNIPS say nothing of
    it; the doubly robust estimate's reward model learns s2 from its probes (the past
    only), not from a flat 0.5 and the mean served cost."""
    rng = np.random.default_rng(7)
    records: list[LoggedRecord] = []
    for k in range(800):
        common = {"task_type": "chat", "min_quality": None, "max_latency_ms": None,
                  "max_cost_usd": None, "input_tokens": 1, "latency_ms": 100.0,
                  "output_tokens": 1}
        records.append(LoggedRecord(
            request_id=str(k), created_at=float(2 * k), action="s0", propensity=1.0,
            routed_by="policy", executed="s0", quality=float(rng.random() < QUALITY[0]),
            cost_usd=COSTS[0] * 1e-6, **common))
        if k % 2:
            records.append(LoggedRecord(
                request_id=f"{k}.probe", created_at=float(2 * k + 1), action="s2",
                propensity=1.0, routed_by="probe", executed="s2",
                quality=float(rng.random() < QUALITY[2]), cost_usd=COSTS[2] * 1e-6,
                **common))
    res = compare(records, _settings(), [Candidate.parse("strategy=s2"),
                                         Candidate.parse("strategy=s1")], resamples=200)
    probed = res["strategy=s2"]
    assert probed["used_records"] == 800  # probes are not decisions to re-weight
    assert probed["quality"].dr.value == pytest.approx(QUALITY[2], abs=0.05)
    assert probed["cost_usd"].dr.value == pytest.approx(COSTS[2] * 1e-6, rel=0.05)
    assert probed["quality"].ess == 0.0
    assert any("never picks a logged action" in w for w in probed["quality"].warnings)
    # Never served nor probed: quality unknown (0.5), cost guessed as the served mean so far.
    unseen = res["strategy=s1"]
    assert unseen["quality"].dr.value == pytest.approx(0.5)
    assert unseen["cost_usd"].dr.value == pytest.approx(COSTS[0] * 1e-6 * 799 / 800)
