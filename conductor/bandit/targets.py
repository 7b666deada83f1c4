"""Quality targets: the cheapest randomized mix of strategies meeting a task type's target,
and the controller that repays a deficit.

A target is a mean quality over the traffic served (per task type), unlike a floor, which
is one request's predicted quality. For drawn qualities q_j and predicted costs c_j the
cheapest mix meeting target tau is the linear program

    minimise sum_j p_j c_j  subject to  sum_j p_j q_j >= tau,  sum_j p_j = 1,  p >= 0.

It has two equality-type constraints, so a basic optimal solution mixes at most two
strategies: either the cheapest single strategy with q_j >= tau, or a pair (a, b) with
q_a < tau <= q_b, mixed with p_b = (tau - q_a) / (q_b - q_a) at cost c_a + p_b (c_b - c_a).
The minimum over all singles and pairs is the LP optimum (Dantzig, "Linear Programming and
Extensions", 1963, ch. 7: basic solutions); ``cheapest_mix`` evaluates it for many draws
at once (strategies x strategies per draw), which is what the propensity estimate needs.

The controller keeps, per task type, decayed sums of the rewards served (R) and of their
count (N): the realized mean over the window is R / N and the deficit is D = tau N - R.
The mix is solved for an effective target tau + gain x D, so an early deficit (from
exploring) raises the target until it is repaid (an integral controller: a constant bias
of the quality estimates is compensated, because D keeps growing until the realized mean
meets the target). A surplus lowers the target by at most ``surplus_cap``.

R is on the true scale: judged rewards are kept apart per strategy (decayed count and sum
of the scores) and counted at the strategy's corrected quality (``JudgeScale``), recounted
whenever the judge's error rates move, so a lenient judge does not meet a target that the
served traffic misses.
"""

from __future__ import annotations

import itertools

import numpy as np
from msgspec import Struct

from conductor.bandit.posterior import JudgeScale


class JudgedSums(Struct, kw_only=True):
    """One strategy's judged rewards in the window: decayed count, sum of the scores,
    and what they are counted as in R (the scale in force when last recounted)."""

    n: float = 0.0
    raw: float = 0.0
    counted: float = 0.0


class TargetState(Struct, kw_only=True):
    """Decayed sums of the rewards served for one task type: R (sum of rewards) and N
    (their count), decayed by ``gamma`` per reward observed."""

    reward_sum: float = 0.0
    count: float = 0.0
    judged: dict[str, JudgedSums] = {}

    def observe(self, reward: float, gamma: float, *, judged: str | None = None,
                scale: JudgeScale | None = None) -> None:
        """A request's first reward: decay, then add it. ``judged``: the strategy whose
        answer a judge scored ``reward`` (counted through ``scale``)."""
        self.reward_sum *= gamma
        self.count = self.count * gamma + 1.0
        if gamma < 1.0:
            for sums in self.judged.values():
                sums.n *= gamma
                sums.raw *= gamma
                sums.counted *= gamma
        if judged is None:
            self.reward_sum += reward
            return
        sums = self.judged.setdefault(judged, JudgedSums())
        sums.n += 1.0
        sums.raw += reward
        self.recount(judged, scale)

    def correct(self, old: float, new: float, *, strategy: str | None = None,
                was_judged: bool = False, judged: bool = False,
                scale: JudgeScale | None = None) -> None:
        """A request's reward changed (a better source, a re-rating): replace, not add.
        ``was_judged``/``judged``: whether the old and new values are a judge's scores of
        ``strategy``'s answer."""
        if not (was_judged or judged):
            self.reward_sum += new - old
            return
        assert strategy is not None
        sums = self.judged.setdefault(strategy, JudgedSums())
        if was_judged:
            sums.n = max(0.0, sums.n - (0.0 if judged else 1.0))
            sums.raw = min(sums.n, max(0.0, sums.raw - old))
        else:
            self.reward_sum -= old
        if judged:
            sums.n += 0.0 if was_judged else 1.0
            sums.raw = min(sums.n, sums.raw + new)
        else:
            self.reward_sum += new
        self.recount(strategy, scale)

    def recount(self, strategy: str, scale: JudgeScale | None) -> None:
        """Count a strategy's judged rewards at what ``scale`` says they are worth."""
        sums = self.judged.get(strategy)
        if sums is None:
            return
        now = sums.raw if scale is None else (
            sums.n * float(scale.quality(sums.raw / sums.n)) if sums.n > 0 else 0.0)
        self.reward_sum += now - sums.counted
        sums.counted = now

    def mean(self) -> float | None:
        return self.reward_sum / self.count if self.count > 0 else None

    def deficit(self, target: float) -> float:
        """tau N - R: how much quality the window owes the target (negative: a surplus)."""
        return target * self.count - self.reward_sum


def effective_target(target: float, state: TargetState, gain: float,
                     surplus_cap: float) -> float:
    """The target the mix is solved for: raised by ``gain`` per unit of deficit, lowered by
    at most ``surplus_cap`` for a surplus, and kept in [0, 1]."""
    adjust = max(gain * state.deficit(target), -surplus_cap)
    return float(min(1.0, max(0.0, target + adjust)))


class Mix(Struct, kw_only=True, frozen=True):
    """The cheapest mix for one draw: ``low`` with probability 1 - p, ``high`` with p
    (``low == high`` and p == 0 for a single strategy). ``met`` is False when no
    feasible strategy reaches the target (then ``low`` is the best feasible one), and
    ``low`` is -1 when no strategy is feasible at all."""

    low: int
    high: int
    p: float
    met: bool


def cheapest_mix(q: np.ndarray, cost: np.ndarray, feasible: np.ndarray,
                 target: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The LP's solution for each row of draws.

    Args:
        q: drawn qualities, shape (n, S).
        cost: predicted costs, shape (S,).
        feasible: which strategies each row may use (floors, latency, cost), (n, S).
        target: the (effective) target.

    Returns:
        (low, high, p, met), each of shape (n,): choose ``high`` with probability p, else
        ``low``; ``met`` False where no feasible strategy reaches the target (then low =
        high = the best feasible); low = high = -1 where nothing is feasible.
    """
    n = q.shape[0]
    inf = np.inf
    rows = np.arange(n)
    reach = feasible & (q >= target)
    single_cost = np.where(reach, cost[None, :], inf)  # (n, S)
    # Among equally cheap singles, the better one (as the frontier walk does).
    rank = np.searchsorted(np.sort(cost), cost).astype(float)
    best_single = np.argmin(np.where(reach, rank[None, :] - 0.5 * q, inf), axis=1)
    best_single_cost = single_cost[rows, best_single]
    # Pairs (a, b), b dearer than a: a below the target, b at or above it.
    pa, pb_ = np.nonzero(cost[:, None] < cost[None, :])
    qa, qb = q[:, pa], q[:, pb_]
    ok = feasible[:, pa] & (qa < target) & reach[:, pb_]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        weight = np.where(ok, (target - qa) / (qb - qa), 0.0)
    pair_cost = np.where(ok, cost[pa] + weight * (cost[pb_] - cost[pa]), inf)
    if pair_cost.shape[1]:
        best_pair = np.argmin(pair_cost, axis=1)
        best_pair_cost = pair_cost[rows, best_pair]
    else:
        best_pair = np.zeros(n, dtype=int)
        best_pair_cost = np.full(n, inf)
    use_pair = best_pair_cost < best_single_cost
    low = np.where(use_pair, pa[best_pair] if len(pa) else best_single, best_single)
    high = np.where(use_pair, pb_[best_pair] if len(pa) else best_single, best_single)
    p = np.where(use_pair, weight[rows, best_pair] if len(pa) else 0.0, 0.0)
    met = np.isfinite(np.minimum(best_single_cost, best_pair_cost))
    if not met.all():  # the target is out of reach: the best feasible (then the cheapest)
        qf = np.where(feasible, q, -inf)
        top = feasible & (qf >= qf.max(axis=1, keepdims=True))
        best = np.argmin(np.where(top, rank[None, :], inf), axis=1)
        any_feasible = feasible.any(axis=1)
        fallback = np.where(any_feasible, best, -1)
        low = np.where(met, low, fallback)
        high = np.where(met, high, fallback)
        p = np.where(met, p, 0.0)
    return low, high, p, met


def frontier(q: list[float], cost: list[float], feasible: list[bool]) -> list[int]:
    """The efficient frontier among the feasible strategies: the upper concave hull of
    (cost, quality), cheapest first. A strategy under it is beaten, at its cost, by a mix
    of two on it."""
    order = sorted((i for i, ok in enumerate(feasible) if ok), key=lambda i: (cost[i], -q[i], i))
    hull: list[int] = []
    for i in order:
        if hull and q[i] <= q[hull[-1]]:
            continue  # dearer (or as dear) and not better
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]
            if (q[b] - q[a]) * (cost[i] - cost[a]) <= (q[i] - q[a]) * (cost[b] - cost[a]):
                hull.pop()  # b lies on or under the segment from a to i
            else:
                break
        hull.append(i)
    return hull


def mix_row(q: list[float], cost: list[float], feasible: list[bool],
            target: float) -> tuple[int, int, float, bool]:
    """``cheapest_mix`` for one draw, by walking the efficient frontier (``frontier``,
    cheapest first): the LP optimum is where it crosses the target. Plain Python: for a
    handful of strategies it is many times faster than the array form, and the request
    path makes one draw."""
    hull = frontier(q, cost, feasible)
    if not hull:
        return -1, -1, 0.0, False
    if q[hull[0]] >= target:
        return hull[0], hull[0], 0.0, True
    for a, b in itertools.pairwise(hull):
        if q[b] >= target:
            p = (target - q[a]) / (q[b] - q[a])
            return (b, b, 0.0, True) if p >= 1.0 else (a, b, p, True)
    return hull[-1], hull[-1], 0.0, False


def mix_shares(low: np.ndarray, high: np.ndarray, p: np.ndarray, size: int) -> np.ndarray:
    """Each strategy's share of the choice per row of draws, shape (n, size): the mix's
    two strategies get 1 - p and p (the coin integrated out, not sampled); a row with
    nothing feasible (low = -1) is all zeros."""
    out = np.zeros((len(low), size))
    ok = low >= 0
    rows = np.flatnonzero(ok)
    out[rows, low[ok]] = 1.0 - p[ok]
    out[rows, high[ok]] += p[ok]
    return out
