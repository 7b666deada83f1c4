"""Decision time of the policy with 4, 8 and 20 strategies (p50/p99 over many decisions).

Measures ThompsonPolicy.decide_full (the draw, the choice and the greedy choice: what the
request path waits for) both with warm caches and right after a posterior update (the
derived parameters are recomputed), for the two rules: a per-request quality floor, and a
quality target (the cheapest mix, with the deficit controller's moved target and the
conservative check). Then the propensity, computed after the answer: exact product form
(floor) and Monte Carlo (for the target: the mixing coin integrated out, drawn in chunks
until the chosen strategy's probability is within 3%).
Last, per-prompt routing (policy.context): featurizing a 2,000-character prompt, the
contextual model's prediction (64 dimensions) and the target decision on it.

    .venv/bin/python benchmarks/decision_time.py
"""

from __future__ import annotations

import argparse
import gc
import math
import time

import numpy as np

from conductor.bandit.context import ContextModel
from conductor.bandit.features import Featurizer
from conductor.bandit.policy import (
    PolicyParams,
    PromptContext,
    StrategyTable,
    TargetSpec,
    ThompsonPolicy,
)
from conductor.bandit.posterior import Prior, TaskPosterior
from conductor.types import Constraints


def world(n_strategies: int, seed: int = 0) -> tuple[TaskPosterior, StrategyTable]:
    rng = np.random.default_rng(seed)
    names = [f"s{i}" for i in range(n_strategies)]
    post = TaskPosterior(names, [Prior(quality_alpha=1, quality_beta=1,
                                       latency_mu=math.log(800))] * n_strategies)
    for i, name in enumerate(names):  # some evidence so posteriors differ
        for _ in range(30):
            post.observe_reward(name, float(rng.random() < 0.7 + 0.25 * i / n_strategies))
            post.observe_outcome(name, float(rng.lognormal(math.log(300 + 100 * i), 0.3)),
                                 int(rng.integers(20, 200)), None, 1.0)
    prices = np.geomspace(0.1e-6, 10e-6, n_strategies)
    table = StrategyTable(names=tuple(names), input_price=tuple(prices),
                          output_price=tuple(4 * prices), discount=(1.0,) * n_strategies,
                          extra_latency_ms=(0.0,) * n_strategies, draft=(-1,) * n_strategies,
                          escalate=(-1,) * n_strategies)
    return post, table


def timed(fn, n: int) -> np.ndarray:
    out = np.empty(n)
    for i in range(n):
        t0 = time.perf_counter_ns()
        fn()
        out[i] = time.perf_counter_ns() - t0
    return out / 1000.0  # microseconds


def bench(policy: ThompsonPolicy, c: Constraints, rng: np.random.Generator, n: int,
          decisions: int, target: TargetSpec | None) -> tuple[float, float, float, float]:
    """p50/p99 of decide (us), p99 right after an update (us), the logged propensity's
    p50 (ms): exact product form (floor) or Monte Carlo (target: drawn until the chosen
    strategy's probability is within 3%)."""
    post, table = world(n)
    eligible = np.ones(n, dtype=bool)

    def decide() -> None:
        policy.decide_full(post, table, eligible, c, 500, 1.0, rng, target)

    gc.collect()
    gc.disable()
    timed(decide, 1000)  # warm up
    dec = timed(decide, decisions)
    after = np.empty(decisions)
    for i in range(decisions):
        post.observe_reward(table.names[0], 1.0)  # clears the cached posterior parameters
        t0 = time.perf_counter_ns()
        decide()
        after[i] = (time.perf_counter_ns() - t0) / 1000.0
    prop = np.empty(200)
    for i in range(len(prop)):  # what the log computes: the decision's own probability
        chosen = policy.decide_full(post, table, eligible, c, 500, 1.0, rng, target)[0].index
        t0 = time.perf_counter_ns()
        policy.choice_probabilities(post, table, eligible, c, 500, 1.0, rng,
                                    method="mc" if target else "exact", target=target,
                                    focus=chosen)
        prop[i] = (time.perf_counter_ns() - t0) / 1000.0
    gc.enable()
    p50, p99 = np.percentile(dec, [50, 99])
    return (float(p50), float(p99), float(np.percentile(after, 99)),
            float(np.percentile(prop, 50) / 1000.0))


def bench_context(policy: ThompsonPolicy, rng: np.random.Generator, n: int,
                  decisions: int) -> tuple[float, float, float, float, float]:
    """p50/p99 (us) of featurizing, of the contextual prediction, and of the whole per-prompt
    path (featurize, predict, decide)."""
    post, table = world(n)
    featurize = Featurizer(64, 0)
    words = ["the", "of", "refund", "order", "theorem", "warranty", "parcel", "please",
             "explain", "why", "summary"]
    prompts = [" ".join(rng.choice(words, 330)) for _ in range(64)]  # ~2,000 characters
    model = ContextModel(list(table.names), featurize.size, prior_mean=post.quality_mean(),
                         prior_sd=post.quality_std())
    for k in range(2000):
        model.observe(table.names[k % n], featurize(prompts[k % 64]), float(rng.random() < .8),
                      1.0)
    model.posterior()
    eligible = np.ones(n, dtype=bool)
    c = Constraints(max_latency_ms=2000.0)
    spec = TargetSpec(target=0.86, base=0.85, surplus=0.2, safe=n - 1, trusted=True)
    i = iter(range(10**9))

    def whole() -> None:
        z = featurize(prompts[next(i) % 64])
        mean, var, _ = model.predict(z)
        ctx = PromptContext(mean=mean, var=var, price=0.05, cost_scale=1e-3)
        policy.decide_full(post, table, eligible, c, 500, 1.0, rng, spec, ctx)

    gc.collect()
    gc.disable()
    timed(whole, 500)
    feat = timed(lambda: featurize(prompts[next(i) % 64]), decisions)
    z = featurize(prompts[0])
    pred = timed(lambda: model.predict(z), decisions)
    path = timed(whole, decisions)
    gc.enable()
    return (*(float(np.percentile(feat, q)) for q in (50, 99)),
            float(np.percentile(pred, 50)), *(float(np.percentile(path, q)) for q in (50, 99)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--decisions", type=int, default=20_000)
    args = ap.parse_args()
    policy = ThompsonPolicy(PolicyParams())
    rng = np.random.default_rng(1)
    print(f"{'rule':<8} {'strategies':>10} {'decide p50 us':>14} {'decide p99 us':>14} "
          f"{'after update p99 us':>20} {'propensity p50 ms':>18}")
    for rule in ("floor", "target"):
        c = Constraints(min_quality=0.85 if rule == "floor" else None, max_latency_ms=2000.0)
        for n in (4, 8, 20):
            # The safe strategy is the best; a small surplus, so the check sometimes holds.
            spec = TargetSpec(target=0.86, base=0.85, surplus=0.2, safe=n - 1, trusted=True)
            p50, p99, a99, prop = bench(policy, c, rng, n, args.decisions,
                                        spec if rule == "target" else None)
            print(f"{rule:<8} {n:>10} {p50:>14.1f} {p99:>14.1f} {a99:>20.1f} {prop:>18.2f}")
    print(f"\n{'per prompt':<10} {'strategies':>10} {'featurize p50/p99 us':>21} "
          f"{'predict p50 us':>15} {'whole path p50/p99 us':>22}")
    for n in (4, 8, 20):
        f50, f99, pr50, w50, w99 = bench_context(policy, rng, n, args.decisions // 4)
        print(f"{'target':<10} {n:>10} {f50:>10.0f} / {f99:<8.0f} {pr50:>15.0f} "
              f"{w50:>11.0f} / {w99:<8.0f}")

if __name__ == "__main__":
    main()
