"""Posteriors per (task type, strategy), kept as decayed sufficient statistics.

Quality is Beta(a0 + s, b0 + f) with fractional updates: a reward r in [0, 1] adds r to
s and 1 - r to f. Log latency is Normal with unknown mean and variance under a
Normal-Inverse-Gamma prior (Murphy 2007, "Conjugate Bayesian analysis of the Gaussian
distribution", eqs. 85-89), updated from weighted sums n, sum x, sum x^2. Output tokens and
the escalation rate of verified strategies are running means with a pseudo-count prior.

Rewards whose value is a judge's score are kept apart (count ``j_n``, sum ``j_s``): a judge
that is wrong in a known way says how good a strategy is only through the mean of its
scores (``JudgeScale``: the judge's error rates, learned from requests that also have a
user's label). Quality is read as the other rewards plus the judged ones at the strategy's
corrected quality, so when the error rates move every judged reward ever learned is
re-corrected at once, and the order in which labels and judged rewards arrived does not
matter.

Evidence decays: every outcome observed for a task type multiplies the evidence of all
that task type's strategies by gamma = 0.5 ** (1 / half_life), so evidence half_life
observations old weighs half as much. Sufficient statistics add up, so state from two
replicas (or a snapshot plus later events) can be combined.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from msgspec import Struct

# Fields of the evidence arrays (all decayed, all non-negative).
EVIDENCE_FIELDS = ("q_s", "q_f", "j_n", "j_s", "lat_n", "lat_sx", "lat_sxx", "tok_n", "tok_sum",
                   "esc_n", "esc_k")
_NONNEG = ("q_s", "q_f", "j_n", "j_s", "lat_n", "lat_sxx", "tok_n", "tok_sum", "esc_n", "esc_k")
_SINCE_V3 = ("j_n", "j_s")  # absent from older snapshots: no judged rewards kept apart


class JudgeScale(Struct, frozen=True):
    """How a judge's scores turn into true quality: its mean score on wrong answers
    (``fp``, its false-positive rate for pass/fail verdicts) and how much more it gives
    right ones (``informativeness`` = 1 - fp - fn). A strategy whose judged mean is p is
    right on (p - fp) / informativeness of its answers (Rogan & Gladen 1978), and a judged
    reward carries informativeness^2 of a label's information."""

    fp: float
    informativeness: float

    def quality(self, judged_mean: np.ndarray | float) -> np.ndarray:
        """The true quality behind judged mean scores, in [0, 1]."""
        return np.clip((np.asarray(judged_mean, dtype=float) - self.fp)
                       / self.informativeness, 0.0, 1.0)

    def item(self, score: float) -> float:
        """One judged score on the true scale, unclipped (its mean over a strategy's
        answers is the strategy's true quality: for models linear in the reward)."""
        return (score - self.fp) / self.informativeness


class Prior(Struct, kw_only=True, frozen=True):
    """Prior for one (task type, strategy); ``conductor calibrate`` fits these from logs."""

    quality_alpha: float
    quality_beta: float
    latency_mu: float  # mean of log latency (ms)
    latency_kappa: float = 1.0
    latency_a: float = 2.0
    latency_b: float = 0.25  # E[sigma^2] = b / (a - 1)
    output_tokens: float = 256.0
    output_tokens_weight: float = 2.0
    # The output-token prior is the task type's expectation, not this strategy's own: it
    # is centred on what every strategy of the task type has written so far, once they
    # have (how long an answer is depends mostly on the task; a strategy not yet tried
    # would otherwise keep the default's cost, above a tried strategy's learned one).
    output_tokens_shared: bool = False
    escalation_rate: float = 0.3
    escalation_weight: float = 2.0

    def is_valid(self) -> bool:
        values = (self.quality_alpha, self.quality_beta, self.latency_kappa, self.latency_a,
                  self.latency_b, self.output_tokens, self.output_tokens_weight,
                  self.escalation_weight)
        return (all(math.isfinite(v) and v > 0 for v in values)
                and math.isfinite(self.latency_mu) and 0.0 <= self.escalation_rate <= 1.0)


def scale_arrays(scales: Sequence[JudgeScale | None]) -> tuple[np.ndarray, np.ndarray]:
    """Per strategy (false-positive rate, informativeness); (0, 1) reads as scored."""
    return (np.array([0.0 if s is None else s.fp for s in scales]),
            np.array([1.0 if s is None else s.informativeness for s in scales]))


class TaskPosterior:
    """The posterior of every strategy for one task type, as arrays indexed by strategy."""

    __slots__ = ("_cache", "calibrated", "evidence", "index", "judge_scales", "observations",
                 "prior", "strategies")

    def __init__(self, strategies: Sequence[str], priors: Sequence[Prior]) -> None:
        self.strategies = list(strategies)
        self.index = {s: i for i, s in enumerate(self.strategies)}
        n = len(self.strategies)
        self.prior = {
            "q_a0": np.array([p.quality_alpha for p in priors], dtype=float),
            "q_b0": np.array([p.quality_beta for p in priors], dtype=float),
            "mu0": np.array([p.latency_mu for p in priors], dtype=float),
            "kappa0": np.array([p.latency_kappa for p in priors], dtype=float),
            "a0": np.array([p.latency_a for p in priors], dtype=float),
            "b0": np.array([p.latency_b for p in priors], dtype=float),
            "tok0": np.array([p.output_tokens for p in priors], dtype=float),
            "tok_k0": np.array([p.output_tokens_weight for p in priors], dtype=float),
            "tok_shared": np.array([p.output_tokens_shared for p in priors], dtype=bool),
            "esc0": np.array([p.escalation_rate for p in priors], dtype=float),
            "esc_k0": np.array([p.escalation_weight for p in priors], dtype=float),
        }
        self.evidence = {f: np.zeros(n) for f in EVIDENCE_FIELDS}
        self.observations = 0.0
        # Per strategy, how its judged rewards are read (None: as scored).
        self.judge_scales: tuple[JudgeScale | None, ...] = (None,) * n
        # Whether any strategy's judged rewards are read through measured error rates.
        self.calibrated = False
        self._cache: dict[str, Any] = {}

    def copy(self) -> TaskPosterior:
        """An independent copy (the state a decision was made on, for its propensity)."""
        other = TaskPosterior.__new__(TaskPosterior)
        other.strategies = self.strategies
        other.index = self.index
        other.prior = self.prior  # never mutated
        other.evidence = {f: a.copy() for f, a in self.evidence.items()}
        other.observations = self.observations
        other.judge_scales = self.judge_scales
        other.calibrated = self.calibrated
        other._cache = {}
        return other

    def _cached(self, key: str, compute: Any) -> Any:
        """Derived parameters, cached until the evidence changes (every mutator clears)."""
        value = self._cache.get(key)
        if value is None:
            value = self._cache[key] = compute()
        return value

    # -- updates ---------------------------------------------------------------------------

    def decay(self, gamma: float) -> None:
        """Multiply all evidence by ``gamma`` (one observation's worth of forgetting)."""
        if gamma < 1.0:
            for arr in self.evidence.values():
                arr *= gamma
            self._cache.clear()

    def observe_outcome(self, strategy: str, latency_ms: float | None,
                        output_tokens: float | None,
                        escalated: bool | None, gamma: float) -> None:
        """An outcome arrived: decay, then add its latency, output tokens and escalation."""
        i = self.index[strategy]
        self.decay(gamma)
        self._cache.clear()
        self.observations += 1.0
        e = self.evidence
        if latency_ms is not None and latency_ms > 0 and math.isfinite(latency_ms):
            x = math.log(latency_ms)
            e["lat_n"][i] += 1.0
            e["lat_sx"][i] += x
            e["lat_sxx"][i] += x * x
        if output_tokens is not None and output_tokens >= 0:
            e["tok_n"][i] += 1.0
            e["tok_sum"][i] += float(output_tokens)
        if escalated is not None:
            e["esc_n"][i] += 1.0
            e["esc_k"][i] += 1.0 if escalated else 0.0

    def observe_reward(self, strategy: str, score: float, weight: float = 1.0) -> None:
        """Fractional Beta update: alpha += w * r, beta += w * (1 - r)."""
        i = self.index[strategy]
        r = min(1.0, max(0.0, float(score)))
        self.evidence["q_s"][i] += weight * r
        self.evidence["q_f"][i] += weight * (1.0 - r)
        self._cache.clear()

    def observe_judged(self, strategy: str, score: float) -> None:
        """A judge's score as a request's reward: kept apart, read through the strategy's
        judge scale."""
        i = self.index[strategy]
        self.evidence["j_n"][i] += 1.0
        self.evidence["j_s"][i] += min(1.0, max(0.0, float(score)))
        self._cache.clear()

    def correct_reward(self, strategy: str, old: float, new: float, *,
                       was_judged: bool = False, judged: bool = False) -> None:
        """Replace an earlier reward by a new one (idempotent feedback), never counting
        twice. ``was_judged``/``judged``: whether the old and the new value are a judge's
        score (a user's label replacing a judged score moves the reward out of the judged
        evidence)."""
        i = self.index[strategy]
        old, new = min(1.0, max(0.0, old)), min(1.0, max(0.0, new))
        e = self.evidence
        if was_judged:
            e["j_n"][i] = max(0.0, e["j_n"][i] - (0.0 if judged else 1.0))
            e["j_s"][i] = min(e["j_n"][i], max(0.0, e["j_s"][i] - old))
        else:
            e["q_s"][i] = max(0.0, e["q_s"][i] - old)
            e["q_f"][i] = max(0.0, e["q_f"][i] - (1.0 - old))
        if judged:
            e["j_n"][i] += 0.0 if was_judged else 1.0
            e["j_s"][i] = min(e["j_n"][i], e["j_s"][i] + new)
        else:
            e["q_s"][i] += new
            e["q_f"][i] += 1.0 - new
        self._cache.clear()

    def set_judge_scale(self, scale: JudgeScale | Sequence[JudgeScale | None] | None) -> None:
        """Read the judged evidence through ``scale`` from now on (None: as scored); one
        scale for every strategy, or one per strategy (a judge that favours its own
        model's answers errs differently on them)."""
        scales = tuple(scale) if isinstance(scale, Sequence) else (scale,) * len(self.index)
        if scales != self.judge_scales:
            self.judge_scales = scales
            self.calibrated = any(s is not None for s in scales)
            self._cache.clear()

    def scale_of(self, strategy: str) -> JudgeScale | None:
        return self.judge_scales[self.index[strategy]]

    def set_quality_evidence(self, strategy: str, successes: float, failures: float) -> None:
        """Replace a strategy's quality evidence outright (a recalibration of all its
        rewards at once; the prior stays)."""
        i = self.index[strategy]
        self.evidence["q_s"][i] = max(0.0, successes)
        self.evidence["q_f"][i] = max(0.0, failures)
        self._cache.clear()

    # -- posterior parameters --------------------------------------------------------------

    def quality_params(self) -> tuple[np.ndarray, np.ndarray]:
        return self._cached("q", self._quality_params)

    def _judged(self) -> tuple[np.ndarray, np.ndarray]:
        """The judged evidence as (successes, failures) on the scale in force."""
        return self._cached("judged", self._judged_evidence)

    def _judged_evidence(self) -> tuple[np.ndarray, np.ndarray]:
        n, js = self.evidence["j_n"], self.evidence["j_s"]
        fp, inf = scale_arrays(self.judge_scales)  # as scored: fp 0, informativeness 1
        q = np.clip((np.divide(js, n, out=np.zeros_like(n), where=n > 0) - fp) / inf, 0.0, 1.0)
        w = inf * inf * n
        return w * q, w * (1.0 - q)

    def _quality_params(self) -> tuple[np.ndarray, np.ndarray]:
        s, f = self._judged()
        return (self.prior["q_a0"] + self.evidence["q_s"] + s,
                self.prior["q_b0"] + self.evidence["q_f"] + f)

    def judged_quality(self) -> np.ndarray:
        """Each strategy's mean judged score as scored (NaN where none was judged)."""
        n = self.evidence["j_n"]
        return np.divide(self.evidence["j_s"], n, out=np.full_like(n, np.nan), where=n > 0)

    def quality_mean(self) -> np.ndarray:
        a, b = self.quality_params()
        return a / (a + b)

    def quality_std(self) -> np.ndarray:
        a, b = self.quality_params()
        n = a + b
        return np.sqrt(a * b / (n * n * (n + 1.0)))

    def quality_trials(self) -> np.ndarray:
        """Effective number of quality observations (decayed; a judged reward counts for
        what the judge scale says it is worth)."""
        def trials() -> np.ndarray:
            s, f = self._judged()
            return self.evidence["q_s"] + self.evidence["q_f"] + s + f

        return self._cached("trials", trials)

    def latency_params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """NIG posterior (mu_n, kappa_n, a_n, b_n) of log latency; Murphy 2007 eqs. 86-89."""
        return self._cached("lat", self._latency_params)

    def _latency_params(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        p, e = self.prior, self.evidence
        n, sx, sxx = e["lat_n"], e["lat_sx"], e["lat_sxx"]
        kappa_n = p["kappa0"] + n
        mu_n = (p["kappa0"] * p["mu0"] + sx) / kappa_n
        a_n = p["a0"] + 0.5 * n
        safe_n = np.where(n > 0, n, 1.0)
        xbar = np.where(n > 0, sx / safe_n, p["mu0"])
        ss = np.maximum(sxx - n * xbar * xbar, 0.0)  # sum of squared deviations
        b_n = p["b0"] + 0.5 * ss + p["kappa0"] * n * (xbar - p["mu0"]) ** 2 / (2.0 * kappa_n)
        return mu_n, kappa_n, a_n, b_n

    def latency_mean_ms(self) -> np.ndarray:
        """Posterior mean latency: exp(mu + sigma^2/2) at the posterior means."""
        mu, _, a, b = self.latency_params()
        sigma2 = b / np.maximum(a - 1.0, 0.5)
        return np.exp(mu + 0.5 * sigma2)

    def output_tokens(self) -> np.ndarray:
        return self._cached("tok", self._output_tokens)

    def _output_tokens(self) -> np.ndarray:
        """Mean output tokens per strategy: its own observations on top of its prior's
        weight, the prior centred (for shared priors) on the task type's default updated
        by every strategy's observations, (default k + sum of tokens) / (k + count)."""
        p, e = self.prior, self.evidence
        centre = p["tok0"]
        if p["tok_shared"].any() and e["tok_n"].sum() > 0:
            pooled = (p["tok0"] * p["tok_k0"] + e["tok_sum"].sum()) / (
                p["tok_k0"] + e["tok_n"].sum())
            centre = np.where(p["tok_shared"], pooled, p["tok0"])
        return (centre * p["tok_k0"] + e["tok_sum"]) / (p["tok_k0"] + e["tok_n"])

    def escalation_rate(self) -> np.ndarray:
        p, e = self.prior, self.evidence
        return self._cached("esc", lambda: (p["esc0"] * p["esc_k0"] + e["esc_k"])
                            / (p["esc_k0"] + e["esc_n"]))

    # -- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "strategies": list(self.strategies),
            "observations": self.observations,
            "evidence": {f: self.evidence[f].tolist() for f in EVIDENCE_FIELDS},
        }

    def load_evidence(self, data: dict[str, Any]) -> list[str]:
        """Load evidence saved by ``to_dict``; strategies no longer configured are dropped,
        new ones start at their prior. Returns what had to be repaired (bad values reset to
        the prior), never raises on bad numbers."""
        problems: list[str] = []
        saved = list(data.get("strategies", []))
        ev = data.get("evidence", {})
        obs = data.get("observations", 0.0)
        self.observations = float(obs) if isinstance(obs, int | float) and math.isfinite(obs) \
            and obs >= 0 else 0.0
        for j, name in enumerate(saved):
            i = self.index.get(name)
            if i is None:
                continue
            row: dict[str, float] = {}
            for f in EVIDENCE_FIELDS:
                try:
                    row[f] = float(ev[f][j])
                except (KeyError, IndexError, TypeError, ValueError):
                    row[f] = 0.0 if f in _SINCE_V3 and f not in ev else float("nan")
            bad = [f for f, v in row.items()
                   if not math.isfinite(v) or (f in _NONNEG and v < 0)]
            if bad:
                problems.append(f"{name}: bad {', '.join(bad)}; reset to prior")
                continue
            for f, v in row.items():
                self.evidence[f][i] = v
        self._cache.clear()
        return problems


class PosteriorState:
    """All task types' posteriors. Created from priors; serialises to plain data."""

    def __init__(self, priors: dict[str, dict[str, Prior]]) -> None:
        self.tasks = {t: TaskPosterior(list(ps), list(ps.values())) for t, ps in priors.items()}

    def __getitem__(self, task_type: str) -> TaskPosterior:
        return self.tasks[task_type]

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "tasks": {t: tp.to_dict() for t, tp in self.tasks.items()}}

    def load(self, data: Any) -> list[str]:
        """Load saved evidence; bad data is repaired to the prior and reported, never raised."""
        if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
            return ["posterior state is not a mapping with 'tasks'; starting from priors"]
        problems: list[str] = []
        for t, tdata in data["tasks"].items():
            if t not in self.tasks:
                continue
            if not isinstance(tdata, dict):
                problems.append(f"{t}: not a mapping; reset to prior")
                continue
            problems += [f"{t}/{p}" for p in self.tasks[t].load_evidence(tdata)]
        return problems
