"""Off-policy evaluation: what would another policy have achieved on logged traffic?

Each logged record holds the context, the action taken, its logged propensity p and the
observed value y (quality or cost). For a candidate that picks the logged action with
probability pi, the importance weight is w = pi / p, and

    IPS    = mean(w * y)                                   (Horvitz-Thompson)
    SNIPS  = sum(w * y) / sum(w)                           (self-normalised)
    DR     = mean(sum_a pi(a) * yhat(a) + w * (y - yhat(a_logged)))   (doubly robust)

with yhat a reward model (here: the running mean of y per (task type, action) over the
log seen so far, so it never uses the future). Intervals: percentile bootstrap over the
records. ESS = (sum w)^2 / sum w^2 says how many logged records the estimate is worth.
Dudik, Langford & Li (2011), "Doubly Robust Policy Evaluation and Learning".
"""

from __future__ import annotations

import math

import numpy as np
from msgspec import Struct


class Estimate(Struct, kw_only=True):
    value: float
    low: float
    high: float


class OPEResult(Struct, kw_only=True):
    ips: Estimate
    snips: Estimate
    dr: Estimate
    ess: float
    n: int
    max_weight: float
    warnings: list[str]


def _interval(values: np.ndarray, stat: str, weights: np.ndarray | None, rng: np.random.Generator,
              resamples: int, level: float) -> tuple[float, float]:
    n = len(values)
    idx = rng.integers(0, n, size=(resamples, n))
    if stat == "mean":
        boots = values[idx].mean(axis=1)
    else:  # ratio: sum(w y) / sum(w)
        assert weights is not None
        num = values[idx].sum(axis=1)
        den = weights[idx].sum(axis=1)
        boots = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        if np.isnan(boots).all():  # no resample holds a record the candidate would serve
            return math.nan, math.nan
    lo, hi = np.nanpercentile(boots, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def evaluate(pi_logged: np.ndarray, propensity: np.ndarray, y: np.ndarray,
             pi_all: np.ndarray, yhat_all: np.ndarray, yhat_logged: np.ndarray, *,
             seed: int = 0, resamples: int = 1000, level: float = 0.95,
             min_ess_fraction: float = 0.1, max_weight_warn: float = 50.0) -> OPEResult:
    """Estimates for one candidate.

    Args:
        pi_logged: the candidate's probability of the logged action, per record.
        propensity: the logging policy's probability of that action, per record.
        y: the observed value per record.
        pi_all, yhat_all: per record, the candidate's probability of every action and the
            reward model's prediction for it (shape (n, actions)).
        yhat_logged: the reward model's prediction for the logged action.
    """
    n = len(y)
    p = np.clip(propensity, 1e-6, 1.0)
    w = pi_logged / p
    rng = np.random.default_rng(seed)
    ips_terms = w * y
    dr_terms = (pi_all * yhat_all).sum(axis=1) + w * (y - yhat_logged)
    sw = w.sum()
    ips = Estimate(value=float(ips_terms.mean()),
                   **dict(zip(("low", "high"), _interval(ips_terms, "mean", None, rng,
                                                          resamples, level), strict=True)))
    snips_value = float(ips_terms.sum() / sw) if sw > 0 else float("nan")
    snips = Estimate(value=snips_value,
                     **dict(zip(("low", "high"), _interval(ips_terms, "ratio", w, rng,
                                                          resamples, level), strict=True)))
    dr = Estimate(value=float(dr_terms.mean()),
                  **dict(zip(("low", "high"), _interval(dr_terms, "mean", None, rng,
                                                         resamples, level), strict=True)))
    ess = float(sw * sw / (w * w).sum()) if (w * w).sum() > 0 else 0.0
    warnings = []
    if ess < min_ess_fraction * n:
        warnings.append(f"effective sample size {ess:.0f} is under {min_ess_fraction:.0%} of "
                        f"the {n} logged records: the candidate puts weight where the log has "
                        "almost none; trust the doubly robust estimate, and little")
    if w.max(initial=0.0) > max_weight_warn:
        warnings.append(f"largest importance weight {w.max():.0f}: some choices of the "
                        "candidate were very unlikely under the logging policy")
    if (pi_logged == 0).all():
        warnings.append("the candidate never picks a logged action: IPS and SNIPS say nothing")
    return OPEResult(ips=ips, snips=snips, dr=dr, ess=ess, n=n,
                     max_weight=float(w.max(initial=0.0)), warnings=warnings)
