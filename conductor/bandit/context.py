"""Per-prompt quality: a Bayesian linear model of each strategy's quality on the prompt's
features, whose prior is the task-level prior.

For strategy j and prompt features z, quality = b_j + w_j . (z - c), with c a centre of
the task type's features, b_j ~ N(m0_j, s0_j^2) (the task-level prior's mean and standard
deviation: a cold start is the task-level policy) and w_j ~ N(0, s_w^2 I). Rewards are
observed with noise variance sigma^2 (0.25: a Bernoulli's largest); the posterior is
Gaussian with precision A = A0 + X'X / sigma^2 and mean A^-1 (A0 m0 + X'y / sigma^2)
(Bishop 2006, PRML eqs. 3.50-3.51), for X the rows (1, z - c). Only sufficient statistics
are kept (N, sum z, sum z z', sum y, sum z y), decayed like the task-level evidence, so the
state adds up, a snapshot plus the events after it rebuilds it exactly, and a corrected
reward replaces the old one (sum y and sum z y move by the difference). The centre c is
the weighted mean of the features seen, refreshed every ``recentre_every`` observations
(any centre gives the same posterior given the statistics; it keeps the numbers scaled).

Judged rewards keep their own sums of y and z y (and of 1 and z over the answers judged):
the model is linear in y, so reading them through the judge's error rates (y -> (y - fp) /
informativeness, ``JudgeScale.item``) when the posterior is formed is the same as having
corrected each judged reward when it arrived, and a move of the rates re-corrects them all.

Whether the prompt helps is measured, not assumed: every reward is first predicted by this
model and by the task-level posterior, and the squared errors are summed (a reward that is
later replaced, a heuristic's by a judge's, is rescored with the final value) (a prequential
comparison: Dawid 1984, "Present position and potential developments: the prequential
approach"). ``advantage()`` is the mean squared error it saves per reward; the model is
``active`` (decisions use the prompt) once it has saved ``open_gain`` per reward over
``min_rewards`` rewards, and stays so until it costs accuracy (a hysteresis, so decisions
do not flip between the two regimes on noise).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from conductor.bandit.posterior import JudgeScale, TaskPosterior, scale_arrays
from conductor.config import PolicyConfig


class ContextModel:
    """The residual models of every strategy of one task type, stacked by strategy."""

    def __init__(self, strategies: list[str], size: int, *, prior_mean: np.ndarray,
                 prior_sd: np.ndarray, prior_std: float = 0.1, noise_var: float = 0.25,
                 recentre_every: int = 64, score_half_life: float = 200.0,
                 open_gain: float = 0.002, min_rewards: float = 50.0) -> None:
        self.strategies = list(strategies)
        self.index = {s: i for i, s in enumerate(self.strategies)}
        self.size = size
        s = len(self.strategies)
        self.n = np.zeros(s)
        self.sz = np.zeros((s, size))
        self.szz = np.zeros((s, size, size))
        self.sr = np.zeros(s)
        self.szr = np.zeros((s, size))
        # The judged rewards' part: count, sum z, sum y, sum z y (in n, sz, szz too).
        self.jn = np.zeros(s)
        self.jz = np.zeros((s, size))
        self.jr = np.zeros(s)
        self.jzr = np.zeros((s, size))
        self.scales: tuple[JudgeScale | None, ...] = (None,) * s
        self.center = np.zeros(size)
        d = size + 1
        self.prior_precision = np.zeros((s, d, d))
        self.prior_precision[:, 0, 0] = 1.0 / np.maximum(prior_sd, 1e-6) ** 2
        self.prior_precision[:, np.arange(1, d), np.arange(1, d)] = 1.0 / prior_std ** 2
        self.prior_mean = np.zeros((s, d))
        self.prior_mean[:, 0] = prior_mean
        self.noise_var = noise_var
        self.recentre_every = recentre_every
        self.seen = 0
        self.sq_error = np.zeros(2)  # (task level, this model), decayed
        self.scored = 0.0
        # The comparison forgets faster than the model: it asks "do the features help now".
        self.score_gamma = 0.5 ** (1.0 / score_half_life)
        self.open_gain = open_gain
        self.min_rewards = min_rewards
        self.active = False
        self._cache: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def for_task(cls, post: TaskPosterior, p: PolicyConfig) -> ContextModel:
        """The model of a task type's strategies: its prior is the task-level posterior,
        its size and prior widths the ``[policy]`` context settings."""
        return cls(post.strategies, p.context_dim + 1, prior_mean=post.quality_mean(),
                   prior_sd=post.quality_std(), prior_std=p.context_prior_std,
                   noise_var=p.context_noise_var, open_gain=p.context_min_gain,
                   min_rewards=p.context_min_rewards)

    # -- updates ---------------------------------------------------------------------------

    def _value(self, reward: float, judged: bool, i: int) -> float:
        """A reward on the true scale (a judged one through strategy i's judge scale)."""
        scale = self.scales[i]
        return scale.item(reward) if judged and scale is not None else reward

    def set_scale(self, scale: JudgeScale | Sequence[JudgeScale | None] | None) -> None:
        """Read the judged rewards through ``scale`` from now on (None: as scored): one
        for every strategy, or one per strategy."""
        scales = tuple(scale) if isinstance(scale, Sequence) else (scale,) * len(self.index)
        if scales != self.scales:
            self.scales = scales
            self._cache = None

    def observe(self, strategy: str, z: np.ndarray, reward: float, gamma: float,
                baseline: float | None = None, *, judged: bool = False) -> None:
        """A reward for a prompt with features z. ``baseline``: the task-level posterior's
        prediction of it, to score this model's own prediction against (before either
        learns from it). ``judged``: the reward is a judge's score."""
        i = self.index[strategy]
        if baseline is not None:
            mine = float(self.predict(z)[0][i])
            value = self._value(reward, judged, i)
            self.sq_error = self.sq_error * self.score_gamma + np.array(
                [(value - baseline) ** 2, (value - mine) ** 2])
            self.scored = self.scored * self.score_gamma + 1.0
            self._gate()
        if gamma < 1.0:
            for arr in (self.n, self.sz, self.szz, self.sr, self.szr, self.jn, self.jz,
                        self.jr, self.jzr):
                arr *= gamma
        self.n[i] += 1.0
        self.sz[i] += z
        self.szz[i] += np.outer(z, z)
        if judged:
            self.jn[i] += 1.0
            self.jz[i] += z
            self.jr[i] += reward
            self.jzr[i] += reward * z
        else:
            self.sr[i] += reward
            self.szr[i] += reward * z
        self.seen += 1
        if self.seen % self.recentre_every == 0:
            total = self.n.sum()
            if total > 0:
                self.center = self.sz.sum(axis=0) / total
        self._cache = None

    def correct(self, strategy: str, z: np.ndarray, old: float, new: float,
                baseline: float | None = None, *, was_judged: bool = False,
                judged: bool = False) -> None:
        """A request's reward changed from ``old`` to ``new`` (a judge's score replacing a
        heuristic's). With ``baseline`` the comparison is rescored too: both predictions
        are charged for the final reward instead of the provisional one (the predictions
        are today's; the model has moved by one reward since it was scored, so the error
        is that of one observation in hundreds)."""
        i = self.index[strategy]
        if baseline is not None:
            mine = float(self.predict(z)[0][i])
            a, b = self._value(old, was_judged, i), self._value(new, judged, i)
            self.sq_error = self.sq_error + np.array(
                [(b - baseline) ** 2 - (a - baseline) ** 2, (b - mine) ** 2 - (a - mine) ** 2])
            self._gate()
        for value, sign, is_judged in ((old, -1.0, was_judged), (new, 1.0, judged)):
            if is_judged:
                self.jr[i] += sign * value
                self.jzr[i] += sign * value * z
            else:
                self.sr[i] += sign * value
                self.szr[i] += sign * value * z
        if was_judged != judged:  # the answer moves between the judged and the rest
            sign = 1.0 if judged else -1.0
            self.jn[i] = max(0.0, self.jn[i] + sign)
            self.jz[i] += sign * z
        self._cache = None

    def _gate(self) -> None:
        gain = self.advantage()
        if not self.active:
            self.active = self.scored >= self.min_rewards and gain >= self.open_gain
        elif gain < min(0.0, self.open_gain):
            self.active = False

    def advantage(self) -> float:
        """Mean squared error per reward the prompt's features saved over the task level
        (negative: they cost accuracy), over the rewards scored so far."""
        if self.scored <= 0:
            return 0.0
        return float((self.sq_error[0] - self.sq_error[1]) / self.scored)

    def fold_judged(self) -> None:
        """Move the judged rewards into the others, read through the scale in force: the
        model then stands on the true scale by itself (a warm start exported from logs
        must not depend on the calibration of the deployment that loads it)."""
        fp, inf = scale_arrays(self.scales)
        self.sr = self.sr + (self.jr - fp * self.jn) / inf
        self.szr = self.szr + (self.jzr - fp[:, None] * self.jz) / inf[:, None]
        self.jn, self.jr = np.zeros_like(self.jn), np.zeros_like(self.jr)
        self.jz, self.jzr = np.zeros_like(self.jz), np.zeros_like(self.jzr)
        self._cache = None

    def cap(self, weight: float) -> None:
        """Keep each strategy's evidence to at most ``weight`` rewards: its statistics
        scaled down (the same means, less certainty), so a warm start fitted offline can
        still be moved by the traffic it is then served."""
        scale = np.minimum(1.0, weight / np.maximum(self.n, 1e-300))
        self.n = self.n * scale
        self.sz = self.sz * scale[:, None]
        self.szz = self.szz * scale[:, None, None]
        self.sr = self.sr * scale
        self.szr = self.szr * scale[:, None]
        self.jn, self.jr = self.jn * scale, self.jr * scale
        self.jz, self.jzr = self.jz * scale[:, None], self.jzr * scale[:, None]
        self._cache = None

    # -- posterior ---------------------------------------------------------------------------

    def posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """Posterior means (S, 1 + size) and covariances (S, 1 + size, 1 + size) of
        (beta, w), for rows (1, z - c). Cached until the statistics change."""
        if self._cache is not None:
            return self._cache
        c = self.center
        s, d = len(self.strategies), self.size + 1
        xtx = np.empty((s, d, d))
        xty = np.empty((s, d))
        czt = self.sz[:, :, None] * c[None, None, :]  # sum z c'
        xtx[:, 0, 0] = self.n
        xtx[:, 0, 1:] = xtx[:, 1:, 0] = self.sz - self.n[:, None] * c
        xtx[:, 1:, 1:] = (self.szz - czt - czt.transpose(0, 2, 1)
                          + self.n[:, None, None] * np.outer(c, c)[None])
        fp, inf = scale_arrays(self.scales)  # the judged rewards on the true scale
        sr = self.sr + (self.jr - fp * self.jn) / inf
        szr = self.szr + (self.jzr - fp[:, None] * self.jz) / inf[:, None]
        xty[:, 0] = sr
        xty[:, 1:] = szr - sr[:, None] * c
        precision = self.prior_precision + xtx / self.noise_var
        cov = np.linalg.inv(precision)
        prior = np.einsum("sij,sj->si", self.prior_precision, self.prior_mean)
        mean = np.einsum("sij,sj->si", cov, prior + xty / self.noise_var)
        self._cache = (mean, cov)
        return self._cache

    def predict_means(self, zs: np.ndarray) -> np.ndarray:
        """Posterior mean quality of every strategy for many prompts: shape (len(zs), S)."""
        coef, _ = self.posterior()
        return coef[:, 0] + (zs - self.center) @ coef[:, 1:].T

    def predict(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For a prompt: each strategy's predicted quality (mean), its variance, and the
        part of the mean that depends on the prompt (w . (z - c))."""
        mean, cov = self.posterior()
        x = np.concatenate(([1.0], z - self.center))
        m = mean @ x
        v = np.einsum("i,sij,j->s", x, cov, x)
        return m, np.maximum(v, 0.0), m - mean[:, 0]

    # -- persistence ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {"strategies": self.strategies, "size": self.size, "seen": self.seen,
                "sq_error": self.sq_error.tolist(), "scored": self.scored,
                "active": self.active,
                "center": self.center.tolist(), "n": self.n.tolist(), "sz": self.sz.tolist(),
                "szz": self.szz.tolist(), "sr": self.sr.tolist(), "szr": self.szr.tolist(),
                "jn": self.jn.tolist(), "jz": self.jz.tolist(), "jr": self.jr.tolist(),
                "jzr": self.jzr.tolist()}

    def load(self, data: Any) -> list[str]:
        """Load statistics saved by ``to_dict``; what does not fit (another feature size,
        strategies no longer configured, bad numbers) is reset and reported."""
        if not isinstance(data, dict) or data.get("size") != self.size:
            return ["contextual state does not match the feature size; reset"]
        problems: list[str] = []
        try:
            center = np.asarray(data["center"], dtype=float)
            if center.shape == (self.size,) and np.isfinite(center).all():
                self.center = center
            self.seen = int(data.get("seen", 0))
            sq = np.asarray(data.get("sq_error", [0.0, 0.0]), dtype=float)
            scored = float(data.get("scored", 0.0))
            if sq.shape == (2,) and np.isfinite(sq).all() and math.isfinite(scored):
                self.sq_error, self.scored = sq, scored
                self.active = bool(data.get("active", False))
            saved = list(data["strategies"])
            arrays = {k: np.asarray(data[k], dtype=float) for k in ("n", "sz", "szz", "sr",
                                                                     "szr")}
            s = len(saved)  # older snapshots kept no judged part
            arrays |= {k: np.asarray(data[k], dtype=float) if k in data else np.zeros(shape)
                       for k, shape in (("jn", (s,)), ("jz", (s, self.size)), ("jr", (s,)),
                                        ("jzr", (s, self.size)))}
        except (KeyError, TypeError, ValueError) as exc:
            return [f"contextual state unreadable ({exc}); reset"]
        for j, name in enumerate(saved):
            i = self.index.get(name)
            if i is None:
                continue
            try:
                row = {k: a[j] for k, a in arrays.items()}
            except IndexError:
                problems.append(f"{name}: contextual state truncated; reset")
                continue
            if not all(np.isfinite(v).all() for v in row.values()) or min(row["n"],
                                                                            row["jn"]) < 0 or (
                    row["szz"].shape != (self.size, self.size)) or any(
                    row[k].shape != (self.size,) for k in ("sz", "szr", "jz", "jzr")):
                problems.append(f"{name}: bad contextual state; reset")
                continue
            self.n[i], self.sz[i], self.szz[i] = row["n"], row["sz"], row["szz"]
            self.sr[i], self.szr[i] = row["sr"], row["szr"]
            self.jn[i], self.jz[i], self.jr[i], self.jzr[i] = (row["jn"], row["jz"], row["jr"],
                                                               row["jzr"])
        self._cache = None
        return problems


def draw_prompt_quality(mean: np.ndarray, var: np.ndarray, n: int, t: float,
                        rng: np.random.Generator | None) -> np.ndarray:
    """Per-prompt quality draws, shape (n, S): N(mean, t var); the mean at t = 0."""
    if t <= 0 or rng is None:
        return np.broadcast_to(mean, (n, mean.size))
    return mean + rng.standard_normal((n, mean.size)) * np.sqrt(t * var)

