"""Offline tools over logs and outcome tables: compare (off-policy evaluation), calibrate
(priors from history) and tune (exploration temperature by replay)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from conductor.bandit.context import ContextModel
from conductor.bandit.features import Featurizer
from conductor.bandit.ope import evaluate
from conductor.bandit.policy import (
    ThompsonPolicy,
    eligible_mask,
    predict_costs,
)
from conductor.bandit.posterior import JudgeScale, PosteriorState, Prior, TaskPosterior
from conductor.bandit.priors import build_priors, build_strategy_table, policy_params, target_base
from conductor.bandit.prompts import PromptPricer
from conductor.bandit.targets import TargetState
from conductor.coefficients import (
    ContextPriors,
    configured_priors,
    read_priors_file,
    start_contexts,
)
from conductor.config import PolicyConfig, Settings, default_settings
from conductor.errors import InvalidRequestError
from conductor.evaluators.calibration import JudgeErrorRates
from conductor.learning import JudgeRates, learn_first_reward, read_judged_through
from conductor.replay.harness import ReplayConfig, run_policy, strongest_model, task_bars
from conductor.replay.logs import LoggedRecord
from conductor.replay.policies import ConductorPolicy
from conductor.replay.world import World
from conductor.types import Constraints

# -- compare ------------------------------------------------------------------------------


@dataclass
class Candidate:
    """A policy to evaluate on logged traffic. ``spec`` examples: ``strategy=turbo-cheap``,
    ``random``, ``temperature=0.5``, ``temperature=2,min_quality=0.9``, ``priors=p.json``,
    ``quality_target=0.9`` (every task type's target, in place of the configured ones)."""

    spec: str
    strategy: str | None = None
    uniform: bool = False
    temperature: float | None = None
    min_quality: float | None = None
    quality_target: float | None = None
    priors: str | None = None
    context: bool = False  # decide per prompt, on the logged features
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, spec: str) -> Candidate:
        c = cls(spec=spec)
        if spec in ("random", "uniform"):
            c.uniform = True
            return c
        for part in spec.split(","):
            if "=" not in part:
                raise InvalidRequestError(
                    f"policy {spec!r}: expected key=value pairs (strategy=, temperature=, "
                    "min_quality=, quality_target=, priors=, context=) or 'random'",
                    field="policy")
            key, value = (x.strip() for x in part.split("=", 1))
            try:
                if key == "strategy":
                    c.strategy = value
                elif key == "temperature":
                    c.temperature = float(value)
                elif key == "min_quality":
                    c.min_quality = float(value)
                elif key == "quality_target":
                    c.quality_target = float(value)
                    if not 0.0 <= c.quality_target <= 1.0:
                        raise InvalidRequestError(f"policy {spec!r}: quality_target must be "
                                                  "in [0, 1]", field="policy")
                elif key == "priors":
                    c.priors = value
                elif key == "context" and value.lower() in ("true", "1", "false", "0"):
                    c.context = value.lower() in ("true", "1")
                elif key == "context":
                    raise InvalidRequestError(f"policy {spec!r}: context must be true or "
                                              "false", field="policy")
                else:
                    raise InvalidRequestError(f"policy {spec!r}: unknown key {key!r}; known: "
                                              "strategy, temperature, min_quality, "
                                              "quality_target, priors, context",
                                              field="policy")
            except ValueError:
                raise InvalidRequestError(f"policy {spec!r}: {key} must be a number",
                                          field="policy") from None
        return c


Scales = dict[str, dict[str, JudgeScale | None]]  # task type -> strategy -> scale


def judge_scales(records: list[LoggedRecord], settings: Settings) -> Scales:
    """Per task type and strategy, how the log's judged rewards are read, as the router
    reads them (``JudgeRates``): through the judge's error rates measured on the log's
    requests that have both a judge score and a user rating, once ``[judge]
    min_calibration_pairs`` of them exist (apart for the judge's own model where a
    self-preference shows); as scored (None) before."""
    rates = JudgeRates(settings)
    for r in records:
        if r.judge is not None and r.user is not None:
            rates.add(r.task_type, r.executed or r.action, r.judge, r.user)
    names = list(settings.strategies)
    return {t: dict(zip(names, rates.scales(t, names), strict=True))
            for t in settings.task_types}


def _scales_of(scales: Scales, task: str, strategies: list[str]
               ) -> tuple[JudgeScale | None, ...]:
    by_strategy = scales.get(task, {})
    return tuple(by_strategy.get(s) for s in strategies)


def true_quality(r: LoggedRecord, scales: Scales) -> float | None:
    """A logged request's reward on the users' scale: a judged one read through the
    judge's error rates ((score - fp) / (1 - fp - fn): unbiased for the mean, not
    clipped), any other as logged."""
    scale = scales.get(r.task_type, {}).get(r.executed or r.action)
    if r.quality is None or not r.judged or scale is None:
        return r.quality
    return scale.item(r.quality)


def compare(records: list[LoggedRecord], settings: Settings, candidates: list[Candidate], *,
            seed: int = 0, resamples: int = 1000) -> dict[str, dict[str, Any]]:
    """Off-policy estimates of mean quality and mean cost for each candidate."""
    names = list(settings.strategies)
    index = {n: i for i, n in enumerate(names)}
    usable = [r for r in records if _served_and_rewarded(r, index, settings)]
    if not usable:
        raise InvalidRequestError("no logged record has a known strategy, a reward and a cost",
                                  field="log_file")
    n, k = len(usable), len(names)
    actions = np.array([index[r.action] for r in usable])
    prop = np.array([r.propensity for r in usable])
    scales = judge_scales(records, settings)
    yq = np.array([true_quality(r, scales) for r in usable], dtype=float)
    yc = np.array([r.cost_usd for r in usable], dtype=float)
    hat_q, hat_c = _reward_models(records, index, settings, scales)
    out: dict[str, dict[str, Any]] = {}
    # The logged policy itself: its propensities are the candidate's probabilities, so every
    # estimator is the plain mean of what was served (a check on the others).
    served = np.zeros((n, k))
    served[np.arange(n), actions] = 1.0
    res = {y: evaluate(prop, prop, v, served, h, h[np.arange(n), actions], seed=seed,
                       resamples=resamples)
           for y, v, h in (("quality", yq, hat_q), ("cost_usd", yc, hat_c))}
    out["logged"] = {**res, "logged_records": len(records), "used_records": n}
    for cand in candidates:
        pi = _candidate_probabilities(cand, usable, settings, names, seed, scales)
        pil = pi[np.arange(n), actions]
        res_q = evaluate(pil, prop, yq, pi, hat_q, hat_q[np.arange(n), actions], seed=seed,
                         resamples=resamples)
        res_c = evaluate(pil, prop, yc, pi, hat_c, hat_c[np.arange(n), actions], seed=seed,
                         resamples=resamples)
        out[cand.spec] = {"quality": res_q, "cost_usd": res_c,
                          "logged_records": len(records), "used_records": n}
    return out


def _served_and_rewarded(r: LoggedRecord, index: dict[str, int], settings: Settings) -> bool:
    """A record ``compare`` re-weights: a served decision (shadow decisions were not
    served; probes are not decisions, see conductor.probing) of a configured strategy and
    task type, with a reward and a cost."""
    return (r.routed_by not in ("shadow", "probe") and r.action in index
            and r.task_type in settings.task_types and r.quality is not None
            and r.cost_usd is not None)


def _reward_models(records: list[LoggedRecord], index: dict[str, int], settings: Settings,
                   scales: Scales) -> tuple[np.ndarray, np.ndarray]:
    """The doubly robust estimate's reward models, quality and cost per served record
    (``_served_and_rewarded``, in log order) and strategy: running means per (task type,
    strategy) over the log before that record (the past only). Probes count here: a probe
    is a strategy's answer to the same traffic, judged, so a cheap strategy the router
    probes rather than serves is predicted from its probes (the importance-weighted
    terms, which need served decisions, cannot see them)."""
    hat_q: list[np.ndarray] = []
    hat_c: list[np.ndarray] = []
    sums: dict[str, np.ndarray] = {}
    served_usd, served_n = 0.0, 0  # the guess for a strategy not seen yet: the mean so far
    for r in records:
        served = _served_and_rewarded(r, index, settings)
        if not served and not (r.routed_by == "probe" and r.action in index
                               and r.quality is not None and r.cost_usd is not None):
            continue
        s = sums.setdefault(r.task_type, np.zeros((3, len(index))))
        cost = r.cost_usd or 0.0  # not None: checked above
        if served:
            cnt = np.maximum(s[0], 1)
            hat_q.append(np.where(s[0] > 0, s[1] / cnt, 0.5))
            hat_c.append(np.where(s[0] > 0, s[2] / cnt,
                                  served_usd / served_n if served_n else 0.0))
            served_usd, served_n = served_usd + cost, served_n + 1
        a = index[r.action]
        s[:, a] += (1.0, true_quality(r, scales), cost)
    return np.array(hat_q), np.array(hat_c)


def _candidate_probabilities(cand: Candidate, records: list[LoggedRecord], settings: Settings,
                             names: list[str], seed: int,
                             scales: Scales) -> np.ndarray:
    n, k = len(records), len(names)
    pi = np.zeros((n, k))
    if cand.strategy is not None:
        if cand.strategy not in names:
            raise InvalidRequestError(f"policy {cand.spec!r}: unknown strategy "
                                      f"{cand.strategy!r}; known: {', '.join(names)}",
                                      field="policy")
        pi[:, names.index(cand.strategy)] = 1.0
        return pi
    if cand.uniform:
        for i, r in enumerate(records):
            el = eligible_mask(names, settings.strategies_for(r.task_type))
            pi[i] = el / el.sum()
        return pi
    # A Thompson candidate that learns from the logged traffic as it goes, under the
    # config's quality targets (or its own) as the router decides: each task type's
    # controller follows the logged rewards, as the live one did.
    coefficients, warm = (read_priors_file(cand.priors, settings) if cand.priors
                          else configured_priors(settings))
    post = PosteriorState(build_priors(settings, coefficients))
    table = build_strategy_table(settings)
    policy = ThompsonPolicy(policy_params(settings.policy))
    rng = np.random.default_rng(seed)
    gamma, target_gamma = settings.policy.gamma(), settings.policy.target_gamma()
    targets = {t: TargetState() for t in post.tasks}
    # Per prompt: the live router's contextual models, learned from the log as it goes
    # (and started from the priors file's models, as the router is), on logged features.
    contexts = {t: ContextModel.for_task(tp, settings.policy)
                for t, tp in post.tasks.items()} if cand.context else {}
    start_contexts(contexts, warm, settings.policy)
    for task, task_post in post.tasks.items():  # judged rewards read as the router does
        read_judged_through(_scales_of(scales, task, task_post.strategies), task_post,
                            targets[task], contexts.get(task))
    pricers = {t: PromptPricer(settings.policy.context_reservoir) for t in contexts}
    size = settings.policy.context_dim + 1
    for i, r in enumerate(records):
        tp = post[r.task_type]
        el = eligible_mask(names, settings.strategies_for(r.task_type))
        c = Constraints(min_quality=cand.min_quality if cand.min_quality is not None
                        else r.min_quality, max_latency_ms=r.max_latency_ms,
                        max_cost_usd=r.max_cost_usd)
        t = cand.temperature if cand.temperature is not None else settings.temperature(
            r.task_type)
        base, safe = target_base(settings, policy, r.task_type, tp, r.client_id,
                                 r.quality_target)
        if cand.quality_target is not None:
            base = cand.quality_target
        spec = None if base is None else policy.target_spec(base, targets[r.task_type], tp,
                                                            el, safe)
        model = contexts.get(r.task_type) if len(r.features) == size else None
        z = np.asarray(r.features)
        context = None if model is None else pricers[r.task_type].context(
            model, tp, z, predict_costs(table, tp, r.input_tokens), el, spec)
        pi[i] = policy.choice_probabilities(tp, table, el, c, r.input_tokens, t, rng,
                                            target=spec, context=context)
        strategy = r.executed if r.executed in tp.index else r.action
        tp.observe_outcome(strategy, None if r.error else r.latency_ms,
                           None if r.error else r.output_tokens, None, gamma)
        if r.quality is not None:
            learn_first_reward(tp, targets[r.task_type], model, strategy, r.quality,
                               judged=r.judged, gamma=gamma, target_gamma=target_gamma,
                               z=z if model is not None else None)
    return pi


# -- calibrate ----------------------------------------------------------------------------

class _Obs:
    def __init__(self) -> None:
        self.q: list[float] = []
        self.lat: list[float] = []
        self.tok: list[float] = []


def _observations_from_logs(records: list[LoggedRecord], scales: Scales
                            ) -> dict[tuple[str, str], _Obs]:
    out: dict[tuple[str, str], _Obs] = {}
    for r in records:
        strategy = r.executed or r.action
        o = out.setdefault((r.task_type, strategy), _Obs())
        q = true_quality(r, scales)
        if q is not None:
            o.q.append(q)
        if r.latency_ms and not r.error:
            o.lat.append(r.latency_ms)
        if r.output_tokens is not None and not r.error:
            o.tok.append(float(r.output_tokens))
    return out


def _observations_from_world(world: World) -> dict[tuple[str, str], _Obs]:
    out: dict[tuple[str, str], _Obs] = {}
    for i, task in enumerate(world.task_types):
        for j, m in enumerate(world.models):
            q = world.quality[i, j]
            if np.isnan(q):
                continue
            o = out.setdefault((task, m), _Obs())
            o.q.append(float(q))
            o.lat.append(float(world.latency_ms[i, j]))
    return out


def _flat_prior() -> Prior:
    """What a (task type, strategy) starts from when neither config nor data says more."""
    return Prior(quality_alpha=1.0, quality_beta=1.0, latency_mu=math.log(1000.0))


def fit_prior(o: _Obs, default: Prior | None, cap: float) -> Prior:
    """A prior from observations, with weight capped at ``cap`` pseudo-observations so
    online learning can still move it."""
    base = default or _flat_prior()
    qa, qb = base.quality_alpha, base.quality_beta
    if o.q:
        m = min(0.99, max(0.01, float(np.mean(o.q))))
        s = min(len(o.q), cap)
        qa, qb = m * s, (1 - m) * s
    mu, kappa, a, b = base.latency_mu, base.latency_kappa, base.latency_a, base.latency_b
    if len(o.lat) >= 2:
        x = np.log(o.lat)
        s = min(len(x), cap)
        mu, kappa, a = float(x.mean()), float(s), 1.0 + s / 2.0
        b = max(float(x.var(ddof=1)), 0.01) * (a - 1.0)
    tok, tok_w = base.output_tokens, base.output_tokens_weight
    if o.tok:
        tok, tok_w = float(np.mean(o.tok)), float(min(len(o.tok), cap))
    return Prior(quality_alpha=qa, quality_beta=qb, latency_mu=mu, latency_kappa=kappa,
                 latency_a=a, latency_b=b, output_tokens=max(tok, 1.0),
                 output_tokens_weight=max(tok_w, 1.0), escalation_rate=base.escalation_rate,
                 escalation_weight=base.escalation_weight)


def _loglik(p: Prior, o: _Obs) -> tuple[float, int]:
    """Per-observation log-likelihood of held-out data under a prior's predictive:
    Bernoulli(mean) for (fractional) quality, Normal(mu, b/(a-1)) for log latency."""
    total, n = 0.0, 0
    m = min(1 - 1e-6, max(1e-6, p.quality_alpha / (p.quality_alpha + p.quality_beta)))
    for q in o.q:
        total += q * math.log(m) + (1 - q) * math.log(1 - m)
        n += 1
    var = p.latency_b / max(p.latency_a - 1.0, 0.5)
    for lat in o.lat:
        x = math.log(lat)
        total += -0.5 * math.log(2 * math.pi * var) - (x - p.latency_mu) ** 2 / (2 * var)
        n += 1
    return total, n


def calibrate(source: list[LoggedRecord] | World, settings: Settings | None, *,
              cap: float = 20.0, holdout: float = 0.2) -> dict[str, Any]:
    """Fitted priors and a held-out check against the defaults: on logs the last
    ``holdout`` of the requests (what comes next), on outcome tables a seeded random
    ``holdout`` of the rows (tables have no order: the last rows of several concatenated
    tables would be one table's). Returns {"priors": {task: {strategy: Prior}},
    "report": {...}}."""
    if isinstance(source, World):
        n = len(source.ids)
        cut = int(n * (1 - holdout))
        rows = np.random.default_rng(0).permutation(n)
        fit_world, test_world = source.take(rows[:cut]), source.take(rows[cut:])
        obs_fit, obs_all = _observations_from_world(fit_world), _observations_from_world(source)
        obs_test = _observations_from_world(test_world)
    else:
        cut = int(len(source) * (1 - holdout))
        scales = judge_scales(source, settings or default_settings())
        obs_fit = _observations_from_logs(source[:cut], scales)
        obs_all = _observations_from_logs(source, scales)
        obs_test = _observations_from_logs(source[cut:], scales)
    defaults = build_priors(settings) if settings is not None else {}
    fitted_check = {key: fit_prior(o, defaults.get(key[0], {}).get(key[1]), cap)
                    for key, o in obs_fit.items()}
    ll_fit = ll_def = 0.0
    n_obs = 0
    for key, o in obs_test.items():
        d = defaults.get(key[0], {}).get(key[1]) or _flat_prior()
        f = fitted_check.get(key, d)
        lf, nf = _loglik(f, o)
        ld, _ = _loglik(d, o)
        ll_fit += lf
        ll_def += ld
        n_obs += nf
    priors: dict[str, dict[str, Prior]] = {}
    for (task, strategy), o in obs_all.items():
        priors.setdefault(task, {})[strategy] = fit_prior(
            o, defaults.get(task, {}).get(strategy), cap)
    contexts = None
    if isinstance(source, World) and source.prompts and all(source.prompts):
        policy = settings.policy if settings is not None else PolicyConfig(
            default_strategy="-")
        contexts = fit_contexts(source, priors, policy, cap)
    elif not isinstance(source, World) and settings is not None:
        contexts = fit_contexts_from_logs(source, priors, settings, cap)
    report = {"observations": {f"{t}/{s}": len(o.q) for (t, s), o in obs_all.items()},
              "weight_cap": cap, "holdout_fraction": holdout, "holdout_observations": n_obs,
              "holdout": (f"a random {holdout:.0%} of the rows" if isinstance(source, World)
                          else f"the last {holdout:.0%} of the requests"),
              "holdout_task_types": sorted({t for t, _ in obs_test}),
              "holdout_loglik_per_obs_fitted": ll_fit / n_obs if n_obs else None,
              "holdout_loglik_per_obs_default": ll_def / n_obs if n_obs else None}
    out: dict[str, Any] = {"priors": priors, "report": report}
    if contexts is not None:
        out["context"] = contexts
    return out


def _context_model(names: list[str], priors: dict[str, Prior],
                   policy: PolicyConfig) -> tuple[ContextModel, np.ndarray]:
    """A task type's per-prompt model whose prior is the task-level prior just fitted, and
    that prior's mean quality per strategy (what each reward is first scored against, so
    the saved model says whether the prompt's words predicted better, ``active``, as the
    live one does)."""
    post = TaskPosterior(names, [priors.get(n) or _flat_prior() for n in names])
    return ContextModel.for_task(post, policy), post.quality_mean()


def _context_priors(models: dict[str, ContextModel], policy: PolicyConfig,
                    cap: float) -> ContextPriors:
    for model in models.values():
        model.fold_judged()  # on the true scale, whatever calibrates the next deployment
        model.cap(cap)
    return ContextPriors(dim=policy.context_dim, seed=policy.context_seed,
                         tasks={t: m.to_dict() for t, m in models.items()})


def fit_contexts(world: World, priors: dict[str, dict[str, Prior]], policy: PolicyConfig,
                 cap: float) -> ContextPriors:
    """Per task type, the per-prompt quality model fitted on every outcome of an outcome
    table with prompts (each row teaches every model's outcome: full information, as no
    online learner gets), its evidence capped at ``cap`` rewards per strategy."""
    featurize = Featurizer(policy.context_dim, policy.context_seed)
    models: dict[str, ContextModel] = {}
    for task in world.tasks():
        model, base = _context_model(world.models, priors.get(task, {}), policy)
        for i in np.flatnonzero(world.task_index(task)):
            z = featurize(world.prompts[i])
            for j, m in enumerate(world.models):
                if not np.isnan(world.quality[i, j]):
                    model.observe(m, z, float(world.quality[i, j]), 1.0,
                                  baseline=float(base[j]))
        models[task] = model
    return _context_priors(models, policy, cap)


def fit_contexts_from_logs(records: list[LoggedRecord], priors: dict[str, dict[str, Prior]],
                           settings: Settings, cap: float) -> ContextPriors | None:
    """The per-prompt models from logged traffic: each request teaches the strategy that
    served it its reward, on the prompt's logged features (bandit feedback, as the live
    model learns). None when no request logged features of the configured size (they are
    logged while ``[policy] context`` is on)."""
    policy = settings.policy
    names = list(settings.strategies)
    models: dict[str, tuple[ContextModel, np.ndarray]] = {}
    scales = judge_scales(records, settings)
    for r in records:
        strategy = r.executed if r.executed in settings.strategies else r.action
        if (len(r.features) != policy.context_dim + 1 or r.quality is None
                or strategy not in settings.strategies or r.task_type not in settings.task_types):
            continue
        if r.task_type not in models:
            models[r.task_type] = _context_model(names, priors.get(r.task_type, {}), policy)
            models[r.task_type][0].set_scale(_scales_of(scales, r.task_type, names))
        model, base = models[r.task_type]
        model.observe(strategy, np.asarray(r.features), r.quality, 1.0,
                      baseline=float(base[model.index[strategy]]), judged=r.judged)
    return _context_priors({t: m for t, (m, _) in models.items()}, policy, cap) if (
        models) else None


# -- tune ---------------------------------------------------------------------------------

def tune_world(world: World, cfg: ReplayConfig,
               temperatures: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
               ) -> dict[str, Any]:
    """Per task type and temperature: mean quality, cost, utility per request (quality -
    cost / (10 x the strongest model's mean cost per request)) and whether the bar was met;
    the recommendation is the best utility among temperatures that meet the bar (else the
    best utility)."""
    bars = task_bars(world, cfg.quality_bar)
    strongest = world.models.index(strongest_model(world))
    rows: dict[str, dict[float, dict[str, float]]] = {t: {} for t in world.tasks()}
    for temp in temperatures:
        acc: dict[str, list[tuple[float, float, float]]] = {t: [] for t in world.tasks()}
        for seed in range(cfg.seeds):
            order = np.random.default_rng([seed, 0]).permutation(len(world.ids))
            chosen = run_policy(world, ConductorPolicy(temp, max_latency_ms=cfg.max_latency_ms,
                                                       reference=strongest_model(world)),
                                bars, order, cfg, seed)
            for task in world.tasks():
                idx = np.flatnonzero(world.task_index(task) & (chosen >= 0))
                q = world.quality[idx, chosen[idx]]
                c = world.cost[idx, chosen[idx]]
                scale = 10.0 * np.nanmean(world.cost[world.task_index(task), strongest])
                acc[task].append((float(q.mean()), float(c.sum()), float((q - c / scale).mean())))
        for task, vals in acc.items():
            arr = np.array(vals)
            rows[task][temp] = {"quality": float(arr[:, 0].mean()),
                                "cost_usd": float(arr[:, 1].mean()),
                                "utility": float(arr[:, 2].mean()),
                                "meets_bar": bool(arr[:, 0].mean() >= bars[task])}
    recommend = {}
    for task, by_t in rows.items():
        ok = {t: v for t, v in by_t.items() if v["meets_bar"]} or by_t
        recommend[task] = max(ok, key=lambda t: ok[t]["utility"])
    return {"bars": bars, "sweep": {t: {str(k): v for k, v in d.items()}
                                    for t, d in rows.items()}, "recommended": recommend}


def tune_logs(records: list[LoggedRecord], settings: Settings,
              temperatures: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
              ) -> dict[str, Any]:
    """The same sweep on logged traffic, through off-policy (doubly robust) estimates;
    utility per request is quality - cost / (10 x the logged mean cost per request). With
    each task type: how many records it rests on and the smallest effective sample size."""
    rows: dict[str, dict[str, dict[str, float]]] = {}
    recommend: dict[str, float] = {}
    sizes: dict[str, dict[str, float]] = {}
    records = [r for r in records if r.routed_by != "probe"]  # not the traffic served
    for task in sorted({r.task_type for r in records}):
        recs = [r for r in records if r.task_type == task]
        res = compare(recs, settings, [Candidate(spec=f"temperature={t}", temperature=t)
                                       for t in temperatures])
        mean_cost = float(np.mean([r.cost_usd or 0.0 for r in recs])) or 1.0
        rows[task] = {}
        for t in temperatures:
            q = res[f"temperature={t}"]["quality"].dr.value
            c = res[f"temperature={t}"]["cost_usd"].dr.value
            rows[task][str(t)] = {"quality": q, "cost_usd": c,
                                  "utility": q - c / (10.0 * mean_cost)}
        recommend[task] = float(max(rows[task], key=lambda k: rows[task][k]["utility"]))
        sizes[task] = {"records": len(recs), "min_ess": min(
            float(res[f"temperature={t}"]["quality"].ess) for t in temperatures)}
    return {"sweep": rows, "recommended": recommend, "sample": sizes}


def judge_error_rates(records: list[LoggedRecord]) -> dict[str, dict[str, Any]]:
    """Per task type, the judge's false-positive and false-negative rates from the logged
    requests that have both a judge score and a user rating (``JudgeErrorRates``)."""
    out: dict[str, JudgeErrorRates] = {}
    for r in records:
        if r.judge is not None and r.user is not None:
            out.setdefault(r.task_type, JudgeErrorRates()).add(r.judge, r.user)
    return {t: rates.report() for t, rates in sorted(out.items())}


def write_priors(result: dict[str, Any], path: str | Path) -> None:
    Path(path).write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=2))
