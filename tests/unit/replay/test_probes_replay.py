"""Probes in the replay: Conductor's policy explores cheap models off the served stream,
and the harness charges what the probes cost."""

from __future__ import annotations

import numpy as np
import pytest

from conductor.config import PolicyConfig
from conductor.replay.harness import (
    Judged,
    ReplayConfig,
    run_policy,
    summarize,
    task_bars,
)
from conductor.replay.policies import ConductorPolicy
from conductor.replay.world import World

MODELS = ["strong", "good-cheap", "bad-1", "bad-2", "bad-3", "bad-4"]


def many_model_world(seed: int, n: int = 1500) -> World:
    """A strong model right on 86% of prompts (cost 40), a cheap one on 84% (cost 1) and
    four cheap ones on 40% (cost 1-2): the target (0.95 of the strong one) is met by the
    good cheap model alone, once the bad ones are told apart from it."""
    rng = np.random.default_rng([seed, 77])
    right = [0.86, 0.84, 0.4, 0.4, 0.4, 0.4]
    quality = np.stack([rng.random(n) < p for p in right], axis=1).astype(float)
    cost = np.tile([40e-6, 1e-6, 1e-6, 1.5e-6, 2e-6, 1e-6], (n, 1))
    return World(ids=[str(i) for i in range(n)], task_types=["chat"] * n, models=MODELS,
                 quality=quality, cost=cost, latency_ms=np.full((n, len(MODELS)), 100.0))


def _run(seed: int, probe_cost_ratio: float) -> tuple[dict[str, float], float, int]:
    w = many_model_world(seed)
    order = np.random.default_rng([seed, 0]).permutation(len(w.ids))
    params = PolicyConfig(default_strategy="-", target_decay=False,
                          probe_cost_ratio=probe_cost_ratio)
    policy = ConductorPolicy(0.5, reference="strong", params=params)
    judged = Judged(score=np.full(len(w.ids), np.nan), judge_usd=np.zeros(len(w.ids)),
                    probe_usd=np.zeros(len(w.ids)))
    bars = task_bars(w, 0.95)
    chosen = run_policy(w, policy, bars, order, ReplayConfig(), seed, judged)
    rows = np.ones(len(w.ids), dtype=bool)
    s = summarize(w, chosen, rows, 0, np.zeros(len(w.ids), dtype=int), bars, ReplayConfig(),
                  order, judged)
    assert judged.probe_usd is not None
    served = float(w.cost[np.arange(len(w.ids)), chosen].sum())
    probes = int((judged.probe_usd > 0).sum())
    return s, served + float(judged.probe_usd.sum()), probes


def test_probes_explore_cheap_models_off_the_served_stream_at_a_lower_cost() -> None:
    """Explored by serving, each bad model's answers are a deficit the strong model
    repays; probed, they cost what the cheap calls cost. Over five seeds both meet the
    target; probing costs less, and the summary's cost includes the probes'."""
    with_probes, without = [], []
    for seed in range(5):
        s, total, probes = _run(seed, 0.25)
        assert s["cost_usd"] == pytest.approx(total, rel=1e-12)  # served plus every probe
        assert probes > 20  # the cheap models were measured by probes
        with_probes.append((s["quality_vs_strongest"], s["cost_vs_strongest"]))
        s0, total0, probes0 = _run(seed, 0.0)
        assert probes0 == 0 and s0["cost_usd"] == pytest.approx(total0, rel=1e-12)
        without.append((s0["quality_vs_strongest"], s0["cost_vs_strongest"]))
    q, c = np.mean(with_probes, axis=0)
    q0, c0 = np.mean(without, axis=0)
    print(f"with probes {q:.3f}/{c:.3f}, without {q0:.3f}/{c0:.3f}")
    assert q >= 0.95 and q0 >= 0.945
    assert c < c0 - 0.05
