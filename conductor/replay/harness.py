"""The replay harness: policies run online over an outcome table in a seeded random order.

Reported per policy, overall and per task type: mean quality, total and mean cost, both
relative to the strongest single model, SLA compliance, constraint violations, cumulative
regret against the best fixed model per task, and (for policies with a quality knob) the
area under the cost-quality frontier, AIQ, as in RouterBench.

Regret uses a utility that prices cost in quality points:
    u = quality - cost / (10 x the strongest model's mean cost on that task),
i.e. paying the strongest model's average price is worth 0.1 of quality.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numpy as np
from msgspec import Struct

from conductor.bandit.posterior import Prior
from conductor.coefficients import ContextPriors
from conductor.evaluators.judge import JudgeSampler
from conductor.replay.policies import (
    UCB1,
    AlwaysModel,
    BestFixedPerTask,
    ConductorPolicy,
    EpsilonGreedy,
    Oracle,
    RandomPolicy,
    ReplayPolicy,
)
from conductor.replay.world import World


class ReplayConfig(Struct, kw_only=True):
    quality_bar: float = 0.95  # target = bar x the strongest model's mean quality
    seeds: int = 3
    judge_noise: float = 0.0  # observed = quality + N(0, noise), clipped
    judge_flip: float = 0.0  # for 0/1 quality: flipped with this probability
    judge_false_positive: float = 0.0  # P(the judge passes a wrong answer)
    judge_false_negative: float = 0.0  # P(the judge fails a right answer)
    judge_length_bias: float = 0.0  # score += bias x (answer tokens / median - 1)
    judge_cost: float = 0.0  # per judged request, x the cheapest model's mean cost
    # The share of answers judged, raised where the policy's posterior is wide, as the
    # router's JudgeSampler does (1: every answer; a policy learns nothing from the rest).
    judge_rate: float = 1.0
    user_feedback_rate: float = 0.0  # fraction of requests that get a true user label
    user_feedback_delay: int = 50  # requests between the answer and its user label
    max_latency_ms: float | None = None
    temperatures: tuple[float, ...] = (0.25, 0.5, 1.0)
    default_temperature: float = 0.5  # the built-in default's exploration: "conductor"
    targets: dict[str, float] = {}  # per task type, overriding quality_bar
    min_quality: dict[str, float] = {}  # per-request floors by task type (Conductor's)
    sweep: tuple[float, ...] = (0.80, 0.85, 0.90, 0.925, 0.95, 0.975, 1.0)
    # Conductor's starting priors per task type and model (``conductor calibrate`` on other
    # traffic); empty: flat priors, everything learned from the replayed stream itself.
    priors: dict[str, dict[str, Prior]] = {}
    priors_from: str | None = None  # where they came from, for the report
    # and the per-prompt models fitted with them (``conductor calibrate`` on a table with
    # prompts): per-prompt routing starts from these
    context_priors: ContextPriors | None = None


def strongest_model(world: World) -> str:
    return world.models[int(np.nanargmax(np.nanmean(world.quality, axis=0)))]


def task_bars(world: World, bar: float) -> dict[str, float]:
    """The quality target per task type: ``bar`` x the strongest single model's mean
    quality there (what the baselines' thresholds and "met" are judged against too)."""
    out = {}
    for task in world.tasks():
        q = np.nanmean(world.quality[world.task_index(task)], axis=0)
        out[task] = float(bar * np.nanmax(q))
    return out


def observe(q: float, cfg: ReplayConfig, rng: np.random.Generator,
            length_ratio: float = 1.0) -> float:
    """What the simulated judge scores an answer of true quality ``q``: its verdict errs
    with the false-positive / false-negative rates (or the symmetric flip), it rises with
    the answer's length by ``judge_length_bias``, plus Gaussian noise; clipped to [0, 1]."""
    if cfg.judge_flip > 0 and rng.random() < cfg.judge_flip:
        q = 1.0 - q
    if q >= 0.5 and cfg.judge_false_negative > 0 and rng.random() < cfg.judge_false_negative:
        q = 0.0
    elif q < 0.5 and cfg.judge_false_positive > 0 and rng.random() < cfg.judge_false_positive:
        q = 1.0
    if cfg.judge_length_bias:
        q += cfg.judge_length_bias * (length_ratio - 1.0)
    if cfg.judge_noise > 0:
        q += rng.normal(0.0, cfg.judge_noise)
    return min(1.0, max(0.0, q))


class Judged(Struct, kw_only=True):
    """Per prompt, filled by ``run_policy``: the judged score the policy saw (NaN: none)
    and the judge's charge."""

    score: np.ndarray
    judge_usd: np.ndarray
    probe_usd: np.ndarray | None = None  # what a probe made on the prompt cost (and its judge)


def run_policy(world: World, policy: ReplayPolicy, bars: dict[str, float], order: np.ndarray,
               cfg: ReplayConfig, seed: int, judged: Judged | None = None) -> np.ndarray:
    """Chosen model index per prompt (in world order), running the policy over ``order``.

    The policy learns from the judge's score of each answer; with ``user_feedback_rate``
    a fraction of requests also get their true label ``user_feedback_delay`` requests
    later (to policies that take labels: ``label(i, task, j, judged, truth)``). A policy
    that names a ``probe`` after choosing (Conductor's) has that model run on the prompt
    too, off the served stream: the judge always grades it, its cost and the judge's are
    charged (``judged.probe_usd``), and it learns through ``update_probe``."""
    rng = np.random.default_rng([seed, 1])
    noise_rng = np.random.default_rng([seed, 2])
    label_rng = np.random.default_rng([seed, 3])
    judge_rng = np.random.default_rng([seed, 4])
    probe_rng = np.random.default_rng([seed, 5])
    sampler = JudgeSampler(max_calls_per_hour=0)  # no budget: its sampling rule only
    quality_std = getattr(policy, "quality_std", None)
    policy.reset(world, bars, rng)
    eligible_all = ~np.isnan(world.quality)
    chosen = np.full(len(world.ids), -1)
    # Each answer's length against its model's median (1 where the table records none).
    ratios = np.ones(world.quality.shape)
    if world.output_tokens.size:
        median = np.nanmedian(world.output_tokens, axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            known = np.isfinite(world.output_tokens) & (median > 0)
            ratios = np.where(known, world.output_tokens / median, 1.0)
    judge_usd = cfg.judge_cost * float(np.nanmin(np.nanmean(world.cost, axis=0)))
    label = getattr(policy, "label", None)
    due: deque[tuple[int, int, str, int, float | None, float]] = deque()
    for step, i in enumerate(order):
        while due and due[0][0] <= step:
            _, di, dtask, dj, dscore, truth = due.popleft()
            label(di, dtask, dj, dscore, truth)  # type: ignore[misc]
        task = world.task_types[i]
        eligible = eligible_all[i]
        if not eligible.any():
            continue
        j = policy.choose(int(i), task, eligible)
        chosen[i] = j
        truth = float(world.quality[i, j])
        seen = cfg.judge_rate >= 1.0 or judge_rng.random() < sampler.probability(
            cfg.judge_rate, quality_std(task, j) if quality_std is not None else 0.0)
        score = observe(truth, cfg, noise_rng, float(ratios[i, j])) if seen else None
        paid = judge_usd if seen else 0.0
        if judged is not None and score is not None:
            judged.score[i], judged.judge_usd[i] = score, paid
        policy.update(int(i), task, j, score, float(world.cost[i, j]) + paid,
                      float(world.latency_ms[i, j]))
        probe = int(getattr(policy, "probe", -1))
        if probe >= 0 and eligible[probe]:
            pscore = observe(float(world.quality[i, probe]), cfg, probe_rng,
                             float(ratios[i, probe]))
            pcost = float(world.cost[i, probe]) + judge_usd
            if judged is not None and judged.probe_usd is not None:
                judged.probe_usd[i] = pcost
            policy.update_probe(int(i), task, probe, pscore, pcost,  # type: ignore[attr-defined]
                                float(world.latency_ms[i, probe]))
        if label is not None and cfg.user_feedback_rate > 0 and (
                label_rng.random() < cfg.user_feedback_rate):
            due.append((step + cfg.user_feedback_delay, int(i), task, j, score, truth))
    return chosen


def summarize(world: World, chosen: np.ndarray, rows: np.ndarray, strongest: int,
              best_fixed: np.ndarray, bars: dict[str, float], cfg: ReplayConfig,
              order: np.ndarray, judged: Judged | None = None) -> dict[str, float]:
    """True quality and cost (the judge's charges included) of what a policy served,
    against the strongest model; and the mean judged score it learned from."""
    idx = np.flatnonzero(rows & (chosen >= 0))
    j = chosen[idx]
    q = world.quality[idx, j]
    c = world.cost[idx, j] + (judged.judge_usd[idx] if judged is not None else 0.0) + (
        judged.probe_usd[idx] if judged is not None and judged.probe_usd is not None else 0.0)
    lat = world.latency_ms[idx, j]
    q_strong = np.nanmean(world.quality[idx, strongest])
    c_strong = np.nanmean(world.cost[idx, strongest])
    tasks = np.array(world.task_types)[idx]
    scale = {t: 10.0 * np.nanmean(world.cost[world.task_index(t), strongest]) for t in set(tasks)}
    s = np.array([scale[t] for t in tasks])
    u_policy = q - c / s
    bf = best_fixed[idx]
    u_best = world.quality[idx, bf] - world.cost[idx, bf] / s
    sla = float(np.mean(lat <= cfg.max_latency_ms)) if cfg.max_latency_ms else 1.0
    below_bar = [t for t in set(tasks) if np.mean(q[tasks == t]) < bars[t]]
    return {
        "met_target": float(not below_bar),
        "requests": len(idx),
        "quality": float(np.mean(q)),
        "cost_usd": float(np.sum(c)),
        "cost_per_request_usd": float(np.mean(c)),
        "quality_vs_strongest": float(np.mean(q) / q_strong) if q_strong else float("nan"),
        "cost_vs_strongest": float(np.mean(c) / c_strong) if c_strong else float("nan"),
        # The best fixed model may have no outcome for a prompt: those prompts count 0.
        "regret": float(np.nansum(u_best - u_policy)),
        "sla_compliance": sla,
        "constraint_violations": int((lat > cfg.max_latency_ms).sum()) if cfg.max_latency_ms
        else 0,
        "task_types_below_bar": len(below_bar),
        "judged_quality": float(np.nanmean(judged.score[idx])) if judged is not None and (
            np.isfinite(judged.score[idx]).any()) else float("nan"),
    }


def cumulative_regret(world: World, chosen: np.ndarray, best_fixed: np.ndarray,
                      strongest: int, order: np.ndarray) -> np.ndarray:
    idx = order[chosen[order] >= 0]
    scale = {t: 10.0 * np.nanmean(world.cost[world.task_index(t), strongest])
             for t in world.tasks()}
    s = np.array([scale[world.task_types[i]] for i in idx])
    j, bf = chosen[idx], best_fixed[idx]
    u_p = world.quality[idx, j] - world.cost[idx, j] / s
    u_b = world.quality[idx, bf] - world.cost[idx, bf] / s
    return np.cumsum(np.nan_to_num(u_b - u_p))


def frontier_aiq(points: Sequence[Sequence[float]], lo: float, hi: float) -> float:
    """RouterBench's AIQ: the area under the non-decreasing convex hull of (cost, quality)
    points over [lo, hi] (log cost axis, as costs span orders of magnitude), divided by the
    range. Left of the cheapest point the frontier is 0; right of the best it stays flat."""
    pts = sorted((float(c), float(q)) for c, q in points if c > 0)
    if not pts or hi <= lo:
        return float("nan")
    hull: list[tuple[float, float]] = []
    best = -np.inf
    for c, q in pts:  # non-decreasing: a dearer point only counts if it is better
        if q > best:
            hull.append((np.log(c), q))
            best = q
    upper: list[tuple[float, float]] = []
    for p in hull:  # upper concave hull (Andrew's monotone chain)
        while len(upper) >= 2 and (
                (upper[-1][0] - upper[-2][0]) * (p[1] - upper[-2][1])
                - (upper[-1][1] - upper[-2][1]) * (p[0] - upper[-2][0])) >= 0:
            upper.pop()
        upper.append(p)
    xs = np.linspace(np.log(lo), np.log(hi), 2001)
    hx = [p[0] for p in upper]
    hy = [p[1] for p in upper]
    ys = np.where(xs < hx[0], 0.0, np.interp(xs, hx, hy))
    return float(np.trapezoid(ys, xs) / (xs[-1] - xs[0]))


def default_policies(world: World, cfg: ReplayConfig) -> list[Callable[[], ReplayPolicy]]:
    ref = strongest_model(world)
    priors = cfg.priors or None
    out: list[Callable[[], ReplayPolicy]] = [
        partial(ConductorPolicy, t, max_latency_ms=cfg.max_latency_ms, reference=ref,
                priors=priors, min_quality=cfg.min_quality,
                name="conductor" if t == cfg.default_temperature else None)
        for t in cfg.temperatures]
    if any(world.prompts):  # per-prompt routing needs the prompts' text
        out.append(partial(ConductorPolicy, cfg.default_temperature,
                           max_latency_ms=cfg.max_latency_ms, reference=ref, context=True,
                           priors=priors, min_quality=cfg.min_quality,
                           context_priors=cfg.context_priors,
                           name="conductor, per prompt"))
    out += [partial(AlwaysModel, m) for m in world.models]
    out += [RandomPolicy, EpsilonGreedy, UCB1, BestFixedPerTask, Oracle]
    return out


def run_replay(world: World, cfg: ReplayConfig,
               policies: list[Callable[[], ReplayPolicy]] | None = None,
               progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Every policy over every seed; returns the report (the JSON ``replay --json`` writes)."""
    factories = policies or default_policies(world, cfg)
    bars = {**task_bars(world, cfg.quality_bar), **cfg.targets}
    strongest = world.models.index(strongest_model(world))
    tasks = world.tasks()
    bf_policy = BestFixedPerTask()
    bf_policy.reset(world, bars, np.random.default_rng(0))
    best_fixed = np.array([bf_policy.choice[t] for t in world.task_types])
    per_policy: dict[str, list[dict[str, Any]]] = {}
    regret_curves: dict[str, np.ndarray] = {}
    deficit_curves: dict[str, dict[str, list[float]]] = {}
    all_rows = np.ones(len(world.ids), dtype=bool)
    for seed in range(cfg.seeds):
        order = np.random.default_rng([seed, 0]).permutation(len(world.ids))
        for make in factories:
            policy = make()
            judged = Judged(score=np.full(len(world.ids), np.nan),
                            judge_usd=np.zeros(len(world.ids)),
                            probe_usd=np.zeros(len(world.ids)))
            chosen = run_policy(world, policy, bars, order, cfg, seed, judged)
            late = np.zeros(len(world.ids), dtype=bool)
            late[order[len(order) // 2:]] = True  # the second half of the stream
            rec: dict[str, Any] = {"overall": summarize(
                world, chosen, all_rows, strongest, best_fixed, bars, cfg, order, judged),
                   "by_task": {t: summarize(world, chosen, world.task_index(t), strongest,
                                            best_fixed, bars, cfg, order, judged)
                               for t in tasks},
                   "second_half": summarize(world, chosen, late, strongest, best_fixed, bars,
                                            cfg, order, judged),
                   "second_half_by_task": {
                       t: summarize(world, chosen, late & world.task_index(t), strongest,
                                    best_fixed, bars, cfg, order, judged) for t in tasks}}
            if isinstance(policy, ConductorPolicy):  # its own estimate, on its own scale
                for t in tasks:
                    rec["by_task"][t]["estimated_quality"] = policy.estimated_quality(t)
                    if cfg.user_feedback_rate > 0:  # what it made of the judge's errors
                        rec["by_task"][t].update(policy.judge_error_estimate(t))
            per_policy.setdefault(policy.name, []).append(rec)
            if seed == 0:
                regret_curves[policy.name] = cumulative_regret(world, chosen, best_fixed,
                                                               strongest, order)
                if isinstance(policy, ConductorPolicy):
                    deficit_curves[policy.name] = policy.deficits
            if progress is not None:
                progress(1)
    report: dict[str, Any] = {
        "prompts": len(world.ids), "models": world.models,
        "strongest_model": world.models[strongest], "quality_bar": cfg.quality_bar,
        "targets": bars, "min_quality": cfg.min_quality, "seeds": cfg.seeds,
        "judge_noise": cfg.judge_noise,
        "judge_flip": cfg.judge_flip, "judge_false_positive": cfg.judge_false_positive,
        "judge_false_negative": cfg.judge_false_negative,
        "judge_length_bias": cfg.judge_length_bias, "judge_cost": cfg.judge_cost,
        "judge_rate": cfg.judge_rate,
        "user_feedback_rate": cfg.user_feedback_rate,
        "user_feedback_delay": cfg.user_feedback_delay,
        "calibrated": cfg.user_feedback_rate > 0, "priors_from": cfg.priors_from,
        "policies": {}}
    for name, recs in per_policy.items():
        report["policies"][name] = {
            "overall": _mean_std([r["overall"] for r in recs]),
            "by_task": {t: _mean_std([r["by_task"][t] for r in recs]) for t in tasks},
            "second_half": _mean_std([r["second_half"] for r in recs]),
            "second_half_by_task": {t: _mean_std([r["second_half_by_task"][t] for r in recs])
                                    for t in tasks}}
    report["aiq"] = aiq_report(world, cfg, progress)
    report["regret_curves"] = {k: v.tolist() for k, v in regret_curves.items()}
    # Per task type, (target - realized mean) over the window after each request: the
    # deficit the controller repays (negative: a surplus).
    report["deficit_curves"] = deficit_curves
    return report


def aiq_report(world: World, cfg: ReplayConfig,
               progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Sweep the quality bar for the policies that have one; single models form the
    zero-router frontier (the convex hull of always:<model>)."""
    costs = np.nanmean(world.cost, axis=0)
    quals = np.nanmean(world.quality, axis=0)
    lo, hi = float(np.nanmin(costs)), float(np.nanmax(costs))
    out: dict[str, Any] = {"cost_range_usd": [lo, hi],
                           "models": {"points": [[float(c), float(q)] for c, q in
                                                 zip(costs, quals, strict=True)]}}
    out["models"]["aiq"] = frontier_aiq(out["models"]["points"], lo, hi)
    order = np.random.default_rng([0, 0]).permutation(len(world.ids))
    rows = np.ones(len(world.ids), dtype=bool)
    makers: dict[str, Callable[[], ReplayPolicy]] = {
        "conductor": lambda: ConductorPolicy(cfg.default_temperature,
                                             max_latency_ms=cfg.max_latency_ms,
                                             reference=strongest_model(world),
                                             priors=cfg.priors or None,
                                             min_quality=cfg.min_quality),
        "epsilon-greedy": EpsilonGreedy, "ucb1": UCB1, "best-fixed-per-task": BestFixedPerTask}
    strongest = world.models.index(strongest_model(world))
    for name, make in makers.items():
        pts = []
        for b in cfg.sweep:
            bars = task_bars(world, b)
            chosen = run_policy(world, make(), bars, order, cfg, 0)
            s = summarize(world, chosen, rows, strongest, np.zeros(len(world.ids), dtype=int),
                          bars, cfg, order)
            pts.append([s["cost_per_request_usd"], s["quality"]])
            if progress is not None:
                progress(1)
        out[name] = {"points": pts, "aiq": frontier_aiq(pts, lo, hi)}
    return out


def _mean_std(recs: list[dict[str, float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for k in recs[0]:
        vals = np.array([r[k] for r in recs], dtype=float)
        out[k] = float(np.mean(vals))
        if len(vals) > 1 and k in ("quality", "cost_usd", "regret", "cost_vs_strongest",
                                   "quality_vs_strongest"):
            out[f"{k}_std"] = float(np.std(vals, ddof=1))
        if k == "quality_vs_strongest":
            out[f"{k}_min"] = float(np.min(vals))
    return out
