"""Quality targets on generated worlds, through the replay harness's Conductor policy (the
ThompsonPolicy and target rule the router decides with)."""

from __future__ import annotations

import numpy as np
import pytest

from conductor.replay.harness import Judged, ReplayConfig, run_policy, task_bars
from conductor.replay.policies import ConductorPolicy
from conductor.replay.world import World


def two_model_world(seed: int, n: int = 2000) -> World:
    """Per-prompt Bernoulli outcomes: strong right on 86%, cheap on 64%; costs 46:1."""
    rng = np.random.default_rng([seed, 99])
    quality = np.c_[rng.random(n) < 0.86, rng.random(n) < 0.64].astype(float)
    cost = np.c_[np.full(n, 46e-6), np.full(n, 1e-6)]
    return World(ids=[str(i) for i in range(n)], task_types=["chat"] * n,
                 models=["strong", "cheap"], quality=quality, cost=cost,
                 latency_ms=np.full((n, 2), 100.0))


def _run(seed: int, floors: bool = False) -> tuple[float, float]:
    """Quality and cost against always-strong; the cost counts the probes too."""
    w = two_model_world(seed)
    order = np.random.default_rng([seed, 0]).permutation(len(w.ids))
    policy = ConductorPolicy(0.5, reference="strong", floors=floors)
    judged = Judged(score=np.full(len(w.ids), np.nan), judge_usd=np.zeros(len(w.ids)),
                    probe_usd=np.zeros(len(w.ids)))
    chosen = run_policy(w, policy, task_bars(w, 0.95), order, ReplayConfig(), seed, judged)
    rows = np.arange(len(chosen))
    assert judged.probe_usd is not None
    return (float(w.quality[rows, chosen].mean() / w.quality[:, 0].mean()),
            float((w.cost[rows, chosen].sum() + judged.probe_usd.sum()) / w.cost[:, 0].sum()))


@pytest.mark.slow
def test_mixing_meets_the_target_at_a_real_saving_on_a_two_model_world() -> None:
    """Serving ~20% with the cheap model keeps 95% of the quality at ~81% of the cost
    (0.64 p + 0.86 (1 - p) = 0.95 x 0.86 at p = 0.195); the floor rule can never use a
    model whose mean sits below the floor."""
    results = [_run(seed) for seed in range(10)]
    print("quality, cost vs always-strong per seed:", np.round(results, 3).tolist())
    good = [q >= 0.95 and c <= 0.85 for q, c in results]
    assert sum(good) >= 9
    floors = [_run(seed, floors=True) for seed in range(3)]
    assert all(c > 0.9 for _, c in floors)  # the rule before targets: little saving


def test_a_forced_early_deficit_is_repaid() -> None:
    """The first 200 requests go to the cheap model (a deficit of ~0.18 each); routing
    then repays it: by the end the window's realized mean meets the target."""
    w = two_model_world(3)
    bars = task_bars(w, 0.95)
    policy = ConductorPolicy(0.5, reference="strong")
    rng = np.random.default_rng(0)
    policy.reset(w, bars, rng)
    state = policy.targets["chat"]
    realized = []
    for i in range(len(w.ids)):
        j = 1 if i < 200 else policy.choose(i, "chat", np.ones(2, dtype=bool))
        policy.update(i, "chat", j, float(w.quality[i, j]), float(w.cost[i, j]), 100.0)
        realized.append(state.mean())
    assert realized[199] < bars["chat"] - 0.1  # deep in deficit after the forced stretch
    assert state.mean() >= bars["chat"]  # repaid over the window by the end


EASY = ["order", "refund", "shipping", "delivery", "tracking", "invoice", "address",
        "return", "label", "parcel"]
HARD = ["integral", "eigenvalue", "theorem", "derivative", "proof", "lemma", "tensor",
        "entropy", "manifold", "topology"]
FILLER = ["please", "help", "me", "with", "this", "question", "about", "the", "following"]


def word_world(seed: int, n: int = 2000) -> World:
    """Whether the cheap model is right depends on the prompt's words: 70% of prompts are
    about orders (cheap right on 97%), the rest about mathematics (cheap right on 10%);
    the strong model is right on 98% of both. Costs 46:1."""
    rng = np.random.default_rng([seed, 77])
    easy = rng.random(n) < 0.7
    prompts = []
    for e in easy:
        words = [*rng.choice(EASY if e else HARD, 5), *rng.choice(FILLER, 3)]
        rng.shuffle(words)
        prompts.append(" ".join(words))
    quality = np.c_[rng.random(n) < 0.98, rng.random(n) < np.where(easy, 0.97, 0.1)]
    return World(ids=[str(i) for i in range(n)], task_types=["chat"] * n,
                 models=["strong", "cheap"], quality=quality.astype(float),
                 cost=np.c_[np.full(n, 46e-6), np.full(n, 1e-6)],
                 latency_ms=np.full((n, 2), 100.0), prompts=prompts)


def _run_words(seed: int, context: bool) -> tuple[float, float, float]:
    """At a target of 0.97 of the strong model's quality: quality over the whole run (the
    target's window), and quality and cost over the last 1,000 of 2,000 prompts, each vs
    always-strong."""
    w = word_world(seed)
    order = np.random.default_rng([seed, 0]).permutation(len(w.ids))
    policy = ConductorPolicy(0.5, reference="strong", context=context)
    chosen = run_policy(w, policy, task_bars(w, 0.97), order, ReplayConfig(), seed)
    late, rows = order[1000:], np.arange(len(chosen))
    return (float(w.quality[rows, chosen].mean() / w.quality[:, 0].mean()),
            float(w.quality[late, chosen[late]].mean() / w.quality[late, 0].mean()),
            float(w.cost[late, chosen[late]].sum() / w.cost[late, 0].sum()))


@pytest.mark.slow
def test_per_prompt_routing_sends_easy_prompts_cheap_where_task_level_cannot() -> None:
    """Ideal: order prompts to the cheap model, mathematics to the strong one, at ~0.31 of
    the cost. Task-level routing can only mix ~10% of the traffic into the cheap model."""
    per_prompt = [_run_words(seed, True) for seed in range(3)]
    task_level = [_run_words(seed, False) for seed in range(3)]
    print("per prompt:", np.round(per_prompt, 3).tolist(), "task level:",
          np.round(task_level, 3).tolist())
    assert all(whole >= 0.97 and late >= 0.965 and cost <= 0.5
               for whole, late, cost in per_prompt)
    assert all(whole >= 0.97 and cost > 0.8 for whole, _, cost in task_level)
