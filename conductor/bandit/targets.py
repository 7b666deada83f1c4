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
"""

from __future__ import annotations

import numpy as np
from msgspec import Struct


class TargetState(Struct, kw_only=True):
    """Decayed sums of the rewards served for one task type: R (sum of rewards) and N
    (their count), decayed by ``gamma`` per reward observed."""

    reward_sum: float = 0.0
    count: float = 0.0

    def observe(self, reward: float, gamma: float) -> None:
        """A request's first reward: decay, then add it."""
        self.reward_sum = self.reward_sum * gamma + reward
        self.count = self.count * gamma + 1.0

    def correct(self, old: float, new: float) -> None:
        """A request's reward changed (a better source, a re-rating): replace, not add."""
        self.reward_sum += new - old

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
    n, s = q.shape
    inf = np.inf
    reach = feasible & (q >= target)
    single_cost = np.where(reach, cost[None, :], inf)  # (n, S)
    # Pairs (a, b): a below the target, b at or above it, b dearer than a.
    below = feasible & (q < target)
    qa, qb = q[:, :, None], q[:, None, :]
    ok = below[:, :, None] & reach[:, None, :] & (cost[:, None] < cost[None, :])[None]
    with np.errstate(divide="ignore", invalid="ignore"):
        pb = np.where(ok, (target - qa) / (qb - qa), 0.0)
    pair_cost = np.where(ok, cost[None, :, None] + pb * (cost[None, None, :]
                                                         - cost[None, :, None]), inf)
    best_single = np.argmin(single_cost, axis=1)
    best_single_cost = single_cost[np.arange(n), best_single]
    flat = pair_cost.reshape(n, s * s)
    best_pair = np.argmin(flat, axis=1)
    best_pair_cost = flat[np.arange(n), best_pair]
    use_pair = best_pair_cost < best_single_cost
    low = np.where(use_pair, best_pair // s, best_single)
    high = np.where(use_pair, best_pair % s, best_single)
    p = np.where(use_pair, pb.reshape(n, s * s)[np.arange(n), best_pair], 0.0)
    met = np.isfinite(np.minimum(best_single_cost, best_pair_cost))
    if not met.all():  # the target is out of reach: the best feasible strategy
        best = np.argmax(np.where(feasible, q, -inf), axis=1)
        any_feasible = feasible.any(axis=1)
        fallback = np.where(any_feasible, best, -1)
        low = np.where(met, low, fallback)
        high = np.where(met, high, fallback)
        p = np.where(met, p, 0.0)
    return low, high, p, met


def mix_shares(low: np.ndarray, high: np.ndarray, p: np.ndarray, size: int) -> np.ndarray:
    """How often each strategy is chosen, averaged over the rows (exact given the rows:
    the mixing coin is integrated out, not sampled)."""
    shares = np.zeros(size)
    ok = low >= 0
    np.add.at(shares, low[ok], 1.0 - p[ok])
    np.add.at(shares, high[ok], p[ok])
    return shares / max(len(low), 1)
