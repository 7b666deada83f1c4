"""Priors per (task type, strategy) and the static strategy table, built from settings.

Pure: settings in, values out. Fitted priors (``conductor calibrate``) override the
configured ones; ``conductor.coefficients`` reads them from a file.
"""

from __future__ import annotations

import math

import msgspec

from conductor.bandit.policy import PolicyParams, StrategyTable, ThompsonPolicy
from conductor.bandit.posterior import Prior, TaskPosterior
from conductor.config import PolicyConfig, RelativeTarget, Settings, VerifiedStrategy

Coefficients = dict[str, dict[str, Prior]]


def build_priors(settings: Settings, coefficients: Coefficients | None = None) -> Coefficients:
    """Priors per (task type, strategy): from the config, overridden by fitted coefficients."""
    out: Coefficients = {}
    for tname, tt in settings.task_types.items():
        row: dict[str, Prior] = {}
        for sname, st in settings.strategies.items():
            fitted = (coefficients or {}).get(tname, {}).get(sname)
            if fitted is not None and fitted.is_valid():
                row[sname] = fitted
                continue
            esc = st.verified.prior_escalation_rate if isinstance(st, VerifiedStrategy) else 0.3
            prior = Prior(
                quality_alpha=st.prior_quality * st.prior_strength,
                quality_beta=(1.0 - st.prior_quality) * st.prior_strength,
                latency_mu=math.log(st.prior_latency_ms),
                latency_kappa=1.0,
                latency_a=2.0,
                latency_b=st.prior_latency_sigma ** 2,
                output_tokens=st.prior_output_tokens or tt.expected_output_tokens,
                output_tokens_shared=st.prior_output_tokens is None,
                escalation_rate=esc,
            )
            if not prior.is_valid():  # prior_quality of exactly 0 or 1
                prior = msgspec.structs.replace(
                    prior, quality_alpha=max(prior.quality_alpha, 1e-3),
                    quality_beta=max(prior.quality_beta, 1e-3))
            row[sname] = prior
        out[tname] = row
    return out


def build_strategy_table(settings: Settings) -> StrategyTable:
    """Prices, batch discounts and windows, and verified links, aligned by strategy index."""
    names = tuple(settings.strategies)
    index = {n: i for i, n in enumerate(names)}
    pin, pout, disc, extra, draft, esc = [], [], [], [], [], []
    for st in settings.strategies.values():
        m = settings.models[st.model]
        pin.append(m.input_usd_per_1m / 1e6)
        pout.append(m.output_usd_per_1m / 1e6)
        disc.append(st.batch_discount)
        extra.append(st.batch_window_ms)
        if isinstance(st, VerifiedStrategy):
            draft.append(index[st.verified.draft])
            esc.append(index[st.verified.escalate_to])
        else:
            draft.append(-1)
            esc.append(-1)
    judge = index[settings.judge.strategy] if settings.judge.strategy else -1
    return StrategyTable(names=names, input_price=tuple(pin), output_price=tuple(pout),
                         discount=tuple(disc), extra_latency_ms=tuple(extra),
                         draft=tuple(draft), escalate=tuple(esc), judge=judge)


def target_base(settings: Settings, policy: ThompsonPolicy, task: str, post: TaskPosterior,
                client_id: str = "default", requested: float | None = None
                ) -> tuple[float | None, int]:
    """A decision's quality target before the controller moves it, and its reference
    strategy's index (-1: none): the task type's (absolute, or ``ratio`` x a cautious
    estimate of the reference), or the client's or the request's when stricter; None when
    none sets one."""
    configured = settings.task_types[task].quality_target
    safe, base = -1, None
    if isinstance(configured, RelativeTarget):
        safe = post.index[configured.relative_to]
        base = policy.reference_target(post, safe, configured.ratio)
    elif configured is not None:
        base = configured
    client = settings.clients.get(client_id)
    for stricter in (requested, client.quality_targets.get(task) if client else None):
        if stricter is not None:
            base = max(base or 0.0, stricter)
    return base, safe


def policy_params(p: PolicyConfig) -> PolicyParams:
    """The policy's parameters from the ``[policy]`` table."""
    return PolicyParams(
        quality_per_usd=p.quality_per_usd, wide_posterior_trials=p.wide_posterior_trials,
        guard_floor=p.guard_floor, propensity_draws=p.propensity_draws,
        mix_propensity_draws=p.mix_propensity_draws,
        mix_propensity_max_draws=p.mix_propensity_max_draws,
        mix_propensity_rel_se=p.mix_propensity_rel_se,
        target_gain=p.target_gain, target_surplus_cap=p.target_surplus_cap,
        target_margin=p.target_margin, target_confidence=p.target_confidence,
        target_reference_z=p.target_reference_z, shortlist_min_share=p.shortlist_min_share,
        shortlist_min_trials=p.shortlist_min_trials, shortlist_draws=p.shortlist_draws,
        probe_trials=p.probe_trials)
