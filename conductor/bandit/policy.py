"""Constrained Thompson sampling with logged propensities.

For every eligible strategy the policy draws a quality from its Beta posterior and a p95
latency from its Normal-Inverse-Gamma posterior of log latency (both widened by the task
type's exploration temperature t: Beta(a/t, b/t), NIG with kappa, a, b divided by t),
and predicts the cost from the request's input tokens, the expected output tokens and
the model's prices. A strategy is feasible when its sampled quality >= min_quality, its
sampled p95 <= max_latency_ms and its cost <= max_cost_usd. With a quality floor the
cheapest feasible strategy wins (ties: higher sampled quality); without one, the highest
sampled quality minus ``quality_per_usd`` x cost. When nothing is feasible the strategy
most likely to meet the constraints wins and the decision says ``constraint_relaxed``.

One vectorised function makes both the decision (one draw) and the propensity estimate
(thousands of draws), so the logged propensity is the probability of exactly this rule.

Starvation guard: a plain Thompson sampler can stop trying a cheap strategy after an
unlucky start (its mean falls under the bar, it is never drawn again, the expensive one
takes over). While a strategy has fewer than ``wide_posterior_trials`` quality
observations, and is not hopeless (its posterior gives at least ``guard_floor`` chance of
meeting the quality floor), its quality draw is optimistic: the larger of the posterior
draw and a draw from the posterior with its evidence shrunk back to the prior's weight.
It keeps being tried until its posterior is narrow or clearly below the floor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from msgspec import Struct
from scipy import special

from conductor.bandit.context import draw_prompt_quality
from conductor.bandit.posterior import TaskPosterior
from conductor.bandit.propensity import (
    QualityTables,
    floor_probabilities,
    priced_probabilities,
)
from conductor.bandit.targets import (
    TargetState,
    cheapest_mix,
    effective_target,
    frontier,
    mix_row,
    mix_shares,
)
from conductor.types import Constraints

Z95 = 1.6448536269514722  # standard normal 0.95 quantile: p95 = exp(mu + Z95 * sigma)


class PolicyParams(Struct, kw_only=True, frozen=True):
    """The policy's configuration, apart from its learned state (``PolicyConfig`` has the
    meaning of each; ``conductor.bandit.priors.policy_params`` builds this from it)."""

    temperature: float = 1.0
    quality_per_usd: float = 20.0
    wide_posterior_trials: float = 40.0
    guard_floor: float = 0.001
    propensity_draws: int = 4000
    mix_propensity_draws: int = 1000
    mix_propensity_max_draws: int = 4000
    mix_propensity_chunk: int = 100
    mix_propensity_rel_se: float = 0.03
    target_gain: float = 0.01
    target_surplus_cap: float = 0.05
    target_margin: float = 0.002
    target_confidence: float = 1.0
    target_reference_z: float = 1.0
    shortlist_min_share: float = 0.01
    shortlist_min_trials: float = 20.0
    shortlist_draws: int = 256
    probe_trials: float = 30.0


class StrategyTable(Struct, kw_only=True, frozen=True):
    """Static per-strategy facts the cost prediction needs, aligned with a TaskPosterior.

    Cost of a direct or batch strategy: (in x in_price + out_hat x out_price) / 1e6 x discount.
    A verified strategy costs its draft + the judge call + P(escalate) x its strong strategy.
    """

    names: tuple[str, ...]
    input_price: tuple[float, ...]  # USD per token
    output_price: tuple[float, ...]
    discount: tuple[float, ...]
    extra_latency_ms: tuple[float, ...]  # batch window
    draft: tuple[int, ...]  # index of the draft strategy, -1 when not verified
    escalate: tuple[int, ...]
    judge: int = -1  # index of the judge strategy, -1 when none
    judge_overhead_tokens: float = 200.0  # rubric and framing around the judged text
    judge_output_tokens: float = 8.0


class TargetSpec(Struct, kw_only=True, frozen=True):
    """A task type's quality target for one decision.

    ``target`` is what the cheapest mix is solved for (the target moved by the deficit
    controller); ``base`` the target itself. Exploring stays within what the window can
    afford: a strategy other than ``safe`` is served only while the realized ``surplus``
    (R - base x N) covers its pessimistic shortfall, surplus + (mean - confidence x std -
    base) >= 0 (a conservative bandit: Wu et al. 2016, "Conservative Bandits"); otherwise
    ``safe`` (the reference, or the best known strategy) serves the request. A reference
    the target is stated against is ``trusted`` to keep it; the best known strategy is
    not: while it is not expected to reach the target, nothing is held back.

    With ``probe_ratio`` > 0 (the request's answer can be judged off the request path)
    exploring a cheap strategy costs no served quality. A strategy whose predicted cost is
    at most ``probe_ratio`` x the safe one's (``probeable``) is not served while its
    quality posterior weighs less than ``PolicyParams.probe_trials`` rewards (``thin``,
    the prior's weight included): the draw's
    mix is solved among the others, and if the draw wanted the thin one it is the
    decision's *probe*. A probe-able strategy the check holds back is probed too. A probe
    runs the strategy on the same request off the path, has the judge grade it and learns
    from that. What is learned by serving is then what is known well enough to serve."""

    target: float
    base: float
    surplus: float = 0.0
    safe: int = -1
    trusted: bool = False
    confidence: float = 1.0
    probe_ratio: float = 0.0


class PromptContext(Struct, kw_only=True, frozen=True):
    """What the contextual posterior says about this prompt, per strategy: its quality's
    mean and variance (drawn from in place of the task-level Beta), the strategies it may
    choose among, and under a target the price of quality (``conductor.bandit.prompts``)."""

    mean: np.ndarray
    var: np.ndarray
    price: float | None = None  # quality per unit of cost, in units of cost_scale
    cost_scale: float = 1.0
    candidates: np.ndarray | None = None  # what the prompt's choice may take (None: all)

    def price_per_cost(self) -> float:
        """The price of quality per unit of (unscaled) cost; call only with a price."""
        assert self.price is not None
        return self.price / max(self.cost_scale, 1e-300)


class Choice(Struct, kw_only=True, frozen=True):
    index: int
    quality: np.ndarray
    latency_p95_ms: np.ndarray
    cost_usd: np.ndarray
    feasible: np.ndarray
    relaxed: bool
    mix: tuple[int, int, float] | None = None  # (low, high, P(high)) under a target
    held_back: bool = False  # the conservative check served ``safe`` instead
    probe: int = -1  # the held-back strategy to run off the path and learn from (-1: none)


def predict_costs(table: StrategyTable, post: TaskPosterior, input_tokens: int) -> np.ndarray:
    """Predicted USD cost of every strategy for a request of ``input_tokens``."""
    out = post.output_tokens()
    pin = np.asarray(table.input_price)
    pout = np.asarray(table.output_price)
    base = (input_tokens * pin + out * pout) * np.asarray(table.discount)
    draft = np.asarray(table.draft)
    verified = draft >= 0
    if not verified.any():
        return base
    cost = base.copy()
    esc = post.escalation_rate()
    for i in np.flatnonzero(verified):
        d, s = table.draft[i], table.escalate[i]
        judge = 0.0
        if table.judge >= 0:
            j = table.judge
            judge_in = input_tokens + out[d] + table.judge_overhead_tokens
            judge = judge_in * pin[j] + table.judge_output_tokens * pout[j]
        cost[i] = base[d] + judge + esc[i] * base[s]
    return cost


class ThompsonPolicy:
    """Decides for one task type's posterior; holds no state of its own (only a memo of
    the quality tables the exact propensities read, keyed by the posterior's numbers)."""

    def __init__(self, params: PolicyParams) -> None:
        self.params = params
        self._tables = QualityTables()

    # -- draws -----------------------------------------------------------------------------

    def _wide(self, post: TaskPosterior, t: float, min_quality: float | None) -> np.ndarray:
        """Strategies whose quality draw is optimistic: fewer than ``wide_posterior_trials``
        observations, and not hopeless (P(quality >= the floor, or the target) >=
        ``guard_floor``)."""
        w = self.params.wide_posterior_trials
        trials = post.quality_trials()
        wide = trials < w
        if wide.any() and min_quality is not None and self.params.guard_floor > 0:
            a, b = post.quality_params()
            wide &= special.betaincc(a / t, b / t, min_quality) >= self.params.guard_floor
        return wide

    def _draw(self, post: TaskPosterior, extra_ms: np.ndarray, n: int, t: float,
              rng: np.random.Generator | None, min_quality: float | None = None,
              target: TargetSpec | None = None, context: PromptContext | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        q, p95 = self._draw_task(post, extra_ms, n, t, rng, min_quality, target)
        if context is not None:  # this prompt's quality, from the contextual posterior
            q = draw_prompt_quality(context.mean, context.var, n, t, rng)
        return q, p95

    def _draw_task(self, post: TaskPosterior, extra_ms: np.ndarray, n: int, t: float,
                   rng: np.random.Generator | None, min_quality: float | None = None,
                   target: TargetSpec | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Quality and p95-latency draws, shape (n, S); t == 0 gives the posterior means.
        The starvation guard serves the floor rule; under a target the controller and the
        conservative check decide how much to explore, so draws are not made optimistic."""
        a, b = post.quality_params()
        mu, kappa, la, lb = post.latency_params()
        if t <= 0.0 or rng is None:
            q = _rows(a / (a + b), n)
            sigma = np.sqrt(lb / np.maximum(la - 1.0, 0.5))
            p95 = _rows(np.exp(mu + Z95 * sigma) + extra_ms, n)
            return q, p95
        size = (n, a.size)
        q = _beta(rng, a / t, b / t, n)
        if self.params.wide_posterior_trials > 0 and target is None:
            wide = self._wide(post, t, min_quality)
            if wide.any():
                # Optimistic second draw from the posterior shrunk to the prior's weight.
                a0, b0 = post.prior["q_a0"], post.prior["q_b0"]
                k = (a0 + b0) / (a + b)
                q2 = _beta(rng, a * k / t, b * k / t, n)
                q = np.where(wide, np.maximum(q, q2), q)
        sigma2 = (lb / t) / _gamma(rng, la / t, n)
        m = mu + rng.standard_normal(size) * np.sqrt(sigma2 * t / kappa)
        # Clipped: a very wide (hot) draw means "could be any latency", not an overflow.
        p95 = np.exp(np.minimum(m + Z95 * np.sqrt(sigma2), 50.0)) + extra_ms
        return q, p95

    @staticmethod
    def _feasible(q: np.ndarray, p95: np.ndarray, cost: np.ndarray, eligible: np.ndarray,
                  c: Constraints) -> np.ndarray:
        feas = _rows(eligible, q.shape[0])
        if c.min_quality is not None:
            feas = feas & (q >= c.min_quality)
        if c.max_latency_ms is not None:
            feas = feas & (p95 <= c.max_latency_ms)
        if c.max_cost_usd is not None:
            feas = feas & (cost <= c.max_cost_usd)
        return feas

    def _choose(self, q: np.ndarray, p95: np.ndarray, cost: np.ndarray, eligible: np.ndarray,
                c: Constraints, relaxed_index: Callable[[], int],
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Chosen index per draw row, whether the row was relaxed, and the feasibility mask
        (the rules without a target: floors, or quality minus priced cost)."""
        feas = self._feasible(q, p95, cost, eligible, c)
        if c.min_quality is not None:
            # Cheapest feasible; rank by cost so that equal costs tie, then higher quality.
            rank = np.searchsorted(np.sort(cost), cost)  # equal costs share a rank
            key = np.where(feas, rank - 0.5 * q, np.inf)
            idx = np.argmin(key, axis=1)
        else:
            key = np.where(feas, q - self.params.quality_per_usd * cost, -np.inf)
            idx = np.argmax(key, axis=1)
        none = np.asarray(~feas.any(axis=1))
        if none.any():
            idx = np.where(none, relaxed_index(), idx)
        return np.asarray(idx), none, feas

    # -- targets ---------------------------------------------------------------------------

    def target_spec(self, base: float | None, state: TargetState, post: TaskPosterior,
                    eligible: np.ndarray, safe: int = -1, probe_ratio: float = 0.0
                    ) -> TargetSpec | None:
        """A decision's target from the task type's ``base`` target (None: no target),
        the window's reward sums and the posterior: the margin added, moved by the deficit
        controller, with the conservative check's ``safe`` strategy (the given reference
        when eligible, else the best strategy the posterior knows). ``probe_ratio``: how
        cheap a strategy must be to be probed instead of served (0: no probes; see
        ``TargetSpec``)."""
        if base is None:
            return None
        p = self.params
        base = min(1.0, base + p.target_margin)
        trusted = safe >= 0 and bool(eligible[safe])
        if not trusted:
            safe = int(np.argmax(np.where(eligible, post.quality_mean(), -np.inf)))
        return TargetSpec(target=effective_target(base, state, p.target_gain,
                                                  p.target_surplus_cap),
                          base=base, surplus=-state.deficit(base), safe=safe,
                          trusted=trusted, confidence=p.target_confidence,
                          probe_ratio=probe_ratio)

    def reference_target(self, post: TaskPosterior, reference: int, ratio: float) -> float:
        """A relative target: ``ratio`` x an upper estimate of the reference's quality (mean
        + ``target_reference_z`` std), so a reference measured too rarely cannot pull its
        own target down: serving it more keeps it measured."""
        upper = post.quality_mean()[reference] + self.params.target_reference_z * float(
            post.quality_std()[reference])
        return ratio * min(1.0, float(upper))

    def shortlist(self, post: TaskPosterior, table: StrategyTable, eligible: np.ndarray,
                  constraints: Constraints, input_tokens: int, rng: np.random.Generator,
                  spec: TargetSpec | None) -> dict[int, str]:
        """Strategies to set aside from exploration, with why: those the rule would choose
        in under ``shortlist_min_share`` of draws from the posterior (judged at the target
        itself, not the moved one), once observed ``shortlist_min_trials`` times. The
        conservative check's safe strategy is never set aside."""
        p = self.params
        shares = self.choice_probabilities(post, table, eligible, constraints, input_tokens,
                                           1.0, rng, draws=p.shortlist_draws, method="mc",
                                           target=at_base(spec))
        trials = post.quality_trials()
        return {i: (f"dominated: chosen in {shares[i]:.1%} of {p.shortlist_draws} posterior "
                    f"draws after {trials[i]:.0f} observations")
                for i in range(len(post.strategies))
                if eligible[i] and shares[i] < p.shortlist_min_share
                and trials[i] >= p.shortlist_min_trials and (spec is None or i != spec.safe)}

    # -- public ----------------------------------------------------------------------------

    def decide(self, post: TaskPosterior, table: StrategyTable, eligible: np.ndarray,
               constraints: Constraints, input_tokens: int, t: float,
               rng: np.random.Generator) -> Choice:
        """One Thompson draw. ``eligible`` masks strategies (task config, open circuits)."""
        cost = predict_costs(table, post, input_tokens)
        extra = np.asarray(table.extra_latency_ms)

        def relaxed() -> int:
            return self.relaxed_choice(post, table, eligible, constraints, cost)

        q, p95 = self._draw(post, extra, 1, t, rng, constraints.min_quality)
        idx, none, feas = self._choose(q, p95, cost, eligible, constraints, relaxed)
        return Choice(index=int(idx[0]), quality=q[0], latency_p95_ms=p95[0], cost_usd=cost,
                      feasible=feas[0], relaxed=bool(none[0]))

    def relaxed_choice(self, post: TaskPosterior, table: StrategyTable, eligible: np.ndarray,
                       constraints: Constraints, cost: np.ndarray) -> int:
        p = meet_log_probability(post, np.asarray(table.extra_latency_ms), cost, constraints)
        return int(np.argmax(np.where(eligible, p, -np.inf)))

    def decide_full(self, post: TaskPosterior, table: StrategyTable, eligible: np.ndarray,
                    constraints: Constraints, input_tokens: int, t: float,
                    rng: np.random.Generator, target: TargetSpec | None = None,
                    context: PromptContext | None = None) -> tuple[Choice, frozenset[int]]:
        """The decision and the greedy choice (what temperature 0 would pick: one strategy,
        or the two of a mix; to say whether the decision explored), sharing the cost
        prediction and the relaxed choice. The propensity is not computed here: the log
        needs it, the answer does not (``choice_probabilities`` on a ``post.copy()`` taken
        now gives it later).

        With a ``target`` the choice is drawn from the cheapest mix meeting it (see
        ``conductor.bandit.targets``) among the strategies that pass the floors, latency
        and cost limits on this draw; floors, latency and cost still bound each request."""
        cost = predict_costs(table, post, input_tokens)
        extra = np.asarray(table.extra_latency_ms)
        everything = eligible
        if context is not None and context.candidates is not None:
            eligible = eligible & context.candidates
        memo: list[int] = []
        thin = thin_strategies(post, target, cost, self.params.probe_trials)
        pool = _servable(eligible, thin)

        def relaxed() -> int:
            if not memo:
                memo.append(self.relaxed_choice(post, table, pool, constraints, cost))
            return memo[0]

        q, p95 = self._draw(post, extra, 1, t, rng, constraints.min_quality, target, context)
        if target is None:
            idx, none, feas = self._choose(q, p95, cost, eligible, constraints, relaxed)
            gq, gp95 = self._draw(post, extra, 1, 0.0, None, context=context)
            greedy = frozenset({int(self._choose(gq, gp95, cost, eligible, constraints,
                                                 relaxed)[0][0])})
            return Choice(index=int(idx[0]), quality=q[0], latency_p95_ms=p95[0],
                          cost_usd=cost, feasible=feas[0], relaxed=bool(none[0])), greedy
        # reach: feasible among every eligible strategy (a probe may go past the candidates)
        reach = self._feasible(q, p95, cost, everything, constraints)
        feas = reach & eligible
        served = feas & ~thin  # what this draw may serve
        mix: tuple[int, int, float] | None = None
        wanted = -1  # what the draw would serve were thin strategies servable
        if context is not None and context.price is not None:
            index = int(priced_choice(q, cost, served, context.price_per_cost())[0])
            if thin.any():
                wanted = int(priced_choice(q, cost, reach, context.price_per_cost())[0])
            unmet = index < 0
            if unmet:
                index = relaxed()
        else:
            u = float(rng.random())
            lo, hi, pr, _ = mix_row(q[0].tolist(), cost.tolist(), served[0].tolist(),
                                    target.target)
            if thin.any():
                wlo, whi, wpr, _ = mix_row(q[0].tolist(), cost.tolist(), feas[0].tolist(),
                                           target.target)
                wanted = (whi if u < wpr else wlo) if wlo >= 0 else -1
            unmet = lo < 0
            index = relaxed() if unmet else (hi if u < pr else lo)
            mix = None if unmet else (lo, hi, pr)
        greedy = self._greedy_under_target(post, extra, cost, eligible & ~thin, constraints,
                                           target, context, relaxed)
        held = bool(held_back(post, target, eligible, context, greedy)[index]) and (
            not unmet)
        probe = wanted if wanted >= 0 and thin[wanted] else (
            index if held and bool(probeable(target, cost)[index]) else -1)
        served_index = target.safe if held else index
        return Choice(index=served_index, quality=q[0],
                      latency_p95_ms=p95[0], cost_usd=cost, feasible=feas[0], relaxed=unmet,
                      mix=mix, held_back=held,
                      probe=-1 if probe == served_index else probe), greedy

    def _greedy_under_target(self, post: TaskPosterior, extra: np.ndarray, cost: np.ndarray,
                             eligible: np.ndarray, constraints: Constraints,
                             target: TargetSpec, context: PromptContext | None,
                             relaxed: Callable[[], int]) -> frozenset[int]:
        """What temperature 0 would choose under a target (the posterior means, or this
        prompt's predicted qualities): the two strategies of the mix, or the priced
        choice; the relaxed choice when nothing is feasible."""
        gq, gp95 = self._draw(post, extra, 1, 0.0, None, context=context)
        gfeas = self._feasible(gq, gp95, cost, eligible, constraints)
        if context is not None and context.price is not None:
            g = int(priced_choice(gq, cost, gfeas, context.price_per_cost())[0])
            return frozenset({g if g >= 0 else relaxed()})
        glow, ghigh, _, _ = mix_row(gq[0].tolist(), cost.tolist(), gfeas[0].tolist(),
                                    target.target)
        return frozenset({glow, ghigh}) if glow >= 0 else frozenset({relaxed()})

    def choice_probabilities(self, post: TaskPosterior, table: StrategyTable,
                             eligible: np.ndarray, constraints: Constraints, input_tokens: int,
                             t: float, rng: np.random.Generator,
                             draws: int | None = None, method: str = "auto",
                             target: TargetSpec | None = None,
                             context: PromptContext | None = None,
                             focus: int | None = None) -> np.ndarray:
        """P(each strategy is chosen) for this context.

        ``exact``: with a quality floor and no tied costs, the rule "cheapest feasible" over
        independent per-strategy draws has a product form,
        P(i) = P(F_i) * prod over cheaper j of (1 - P(F_j)) (+ P(no F) for the relaxed choice),
        with P(F_i) = P(q_i >= m) P(p95_i <= L) [cost_i <= C]; the Beta tail is exact and
        the latency term a 64-point quantile quadrature over sigma^2 (error < 0.002).
        Without a floor, "most quality net of priced cost" is a one-dimensional integral
        (``conductor.bandit.propensity``, error < 0.003 at the usual temperatures), several times
        cheaper than the draws.
        ``mc``: Monte Carlo over the same draws the decision uses; standard error at most
        0.5 / sqrt(n) (0.0079 at 4000). ``auto`` takes ``exact`` where it applies (not with
        a prompt's context).
        Temperature 0 gives the exact one-hot vector.

        With a ``target`` the rule has no product form: Monte Carlo over posterior draws,
        with each draw's mixing coin integrated out (its two strategies get 1 - p and p,
        so the estimate varies less than counting sampled choices), composed with the
        deterministic conservative check (what it holds back goes to ``target.safe``).
        With ``focus`` (the strategy a decision chose: the one whose probability the log
        needs) the draws come in chunks of ``mix_propensity_chunk`` and stop once that
        probability's standard error (at least 3 / draws, for what the draws may not have
        shown yet) is within ``mix_propensity_rel_se`` of it, or at
        ``draws`` (default ``mix_propensity_max_draws``; without a focus all of ``draws``,
        default ``mix_propensity_draws``): a likely choice needs few draws, a rare one,
        whose importance weight is large, gets many.
        """
        cost = predict_costs(table, post, input_tokens)
        extra = np.asarray(table.extra_latency_ms)
        if context is not None and context.candidates is not None:
            eligible = eligible & context.candidates
        thin = thin_strategies(post, target, cost, self.params.probe_trials)
        pool = _servable(eligible, thin)

        def relaxed() -> int:
            return self.relaxed_choice(post, table, pool, constraints, cost)

        if target is None:
            return self._probabilities(post, eligible, constraints, t, rng, cost, extra,
                                       relaxed, draws, method, context)
        greedy = (self._greedy_under_target(post, extra, cost, eligible & ~thin, constraints,
                                            target, context, relaxed)
                  if context is not None else frozenset())
        held = held_back(post, target, eligible, context, greedy)
        # Every strategy but the safe one held back, and a draw with nothing feasible (none
        # without limits) relaxes to the safe one too: it takes every draw's share.
        unlimited = (constraints.min_quality is None and constraints.max_latency_ms is None
                     and constraints.max_cost_usd is None)
        if target.safe >= 0 and held.sum() == held.size - 1 and (
                unlimited or relaxed() == target.safe):
            return (np.arange(held.size) == target.safe).astype(float)
        if t <= 0:
            q, p95 = self._draw(post, extra, 1, 0.0, None, context=context)
            feas = self._feasible(q, p95, cost, eligible & ~thin, constraints)
            return _mix_rows(q, cost, feas, target, context, held, relaxed).sum(axis=0)
        # Latency enters only through feasibility, independently of quality: draw that as a
        # coin with the exact P(p95 <= limit) rather than drawing latencies.
        a, b = post.quality_params()
        free = Constraints(max_cost_usd=constraints.max_cost_usd,
                           max_latency_ms=constraints.max_latency_ms)
        p_ok = np.where(eligible & ~thin,  # a thin strategy is probed, never served
                        self.feasible_probabilities(post, extra, cost, free, t), 0.0)

        def rows(n: int) -> np.ndarray:
            if context is None:
                q = rng.beta(a / t, b / t, size=(n, a.size))
            else:
                q = draw_prompt_quality(context.mean, context.var, n, t, rng)
            feas = rng.random((n, a.size)) < p_ok
            if constraints.min_quality is not None:
                feas &= q >= constraints.min_quality
            return _mix_rows(q, cost, feas, target, context, held, relaxed)

        p = self.params
        most = draws or (p.mix_propensity_draws if focus is None else p.mix_propensity_max_draws)
        chunk = most if focus is None else min(most, p.mix_propensity_chunk)
        return _drawn_shares(rows, a.size, most, chunk, focus, p.mix_propensity_rel_se)

    def _probabilities(self, post: TaskPosterior, eligible: np.ndarray,
                       constraints: Constraints, t: float, rng: np.random.Generator,
                       cost: np.ndarray, extra: np.ndarray, relaxed: Callable[[], int],
                       draws: int | None, method: str,
                       context: PromptContext | None = None) -> np.ndarray:
        if t > 0 and method != "mc" and context is None and (
                constraints.min_quality is None
                or len(set(costs := cost[eligible].tolist())) == len(costs)):
            return self._exact_probabilities(post, extra, cost, eligible, constraints, t,
                                             relaxed)
        if method == "exact" and t > 0:
            raise ValueError("exact propensities with a quality floor need distinct costs")
        n = 1 if t <= 0 else (draws or self.params.propensity_draws)
        q, p95 = self._draw(post, extra, n, t, rng, constraints.min_quality, context=context)
        idx, _, _ = self._choose(q, p95, cost, eligible, constraints, relaxed)
        return np.bincount(idx, minlength=len(post.strategies)) / float(n)

    def feasible_probabilities(self, post: TaskPosterior, extra_ms: np.ndarray, cost: np.ndarray,
                               c: Constraints, t: float) -> np.ndarray:
        """P(F_i): the probability that strategy i's draw is feasible (t > 0)."""
        a, b = post.quality_params()
        p = np.ones(a.size)
        if c.min_quality is not None:
            p_q = special.betaincc(a / t, b / t, c.min_quality)
            if self.params.wide_posterior_trials > 0:
                wide = self._wide(post, t, c.min_quality)
                if wide.any():
                    k = (post.prior["q_a0"] + post.prior["q_b0"]) / (a + b)
                    p_q2 = special.betaincc(a * k / t, b * k / t, c.min_quality)
                    p_q = np.where(wide, 1.0 - (1.0 - p_q) * (1.0 - p_q2), p_q)
            p = p * p_q
        if c.max_latency_ms is not None:
            mu, kappa, la, lb = post.latency_params()
            # sigma^2 ~ InvGamma(la/t, lb/t) at its quantiles u: (lb/t) / Gamma(la/t).ppf(1-u).
            g = gamma_upper_quantiles(la / t)
            sigma = np.sqrt((lb / t)[None, :] / np.maximum(g, 1e-300))
            room = np.log(np.maximum(c.max_latency_ms - extra_ms, 1e-300))
            # log p95 = m + Z95 sigma with m ~ N(mu, sigma^2 t / kappa); capped as in _draw.
            z = (np.minimum(room, 50.0)[None, :] - Z95 * sigma - mu[None, :]) / (
                sigma * np.sqrt(t / kappa)[None, :])
            p_l = special.ndtr(z).mean(axis=0)
            p = p * np.where(c.max_latency_ms - extra_ms > 0, p_l, 0.0)
        if c.max_cost_usd is not None:
            p = p * (cost <= c.max_cost_usd)
        return p

    def _exact_probabilities(self, post: TaskPosterior, extra_ms: np.ndarray, cost: np.ndarray,
                             eligible: np.ndarray, c: Constraints, t: float,
                             relaxed: Callable[[], int]) -> np.ndarray:
        """Exact propensities (``conductor.bandit.propensity``): with a floor the product
        form, without one the one-dimensional integral; P(none feasible) to the relaxed
        choice."""
        pf = np.where(eligible, self.feasible_probabilities(post, extra_ms, cost, c, t), 0.0)
        if c.min_quality is not None:
            probs, none = floor_probabilities(pf, cost)
        else:
            wide = self._wide(post, t, None) if self.params.wide_posterior_trials > 0 else (
                np.zeros(len(pf), dtype=bool))
            grid, cdf = self._tables.get(post, eligible, wide, t)
            probs = priced_probabilities(grid, cdf, pf, self.params.quality_per_usd * cost)
            none = float(np.prod(1.0 - pf[eligible]))
        if none > 1e-12:  # the relaxed choice only matters when it can happen
            probs[relaxed()] += none
        return probs


def _mix_rows(q: np.ndarray, cost: np.ndarray, feas: np.ndarray, target: TargetSpec,
              context: PromptContext | None, held: np.ndarray,
              relaxed: Callable[[], int]) -> np.ndarray:
    """Per row of draws, each strategy's share of the target rule's choice (n, S): the
    mix's two strategies get 1 - p and p (the coin integrated out), the relaxed choice
    takes a row where nothing is feasible, and what the conservative check holds back goes
    to ``target.safe``."""
    n, size = q.shape
    if context is not None and context.price is not None:
        low = priced_choice(q, cost, feas, context.price_per_cost())
        high, p = low, np.zeros(n)
    else:
        low, high, p, _ = cheapest_mix(q, cost, feas, target.target)
    out = mix_shares(low, high, p, size)
    if held.any():  # not a relaxed row's choice: the decision does not hold that back
        moved = np.ix_(np.flatnonzero(low >= 0), np.flatnonzero(held))
        out[moved[0][:, 0], target.safe] += out[moved].sum(axis=1)
        out[moved] = 0.0
    if (low < 0).any():
        out[low < 0, relaxed()] = 1.0
    return out


def _servable(eligible: np.ndarray, thin: np.ndarray) -> np.ndarray:
    """What a decision may serve: the eligible strategies but the thin ones (probed
    instead), unless nothing else is eligible."""
    pool = eligible & ~thin
    return pool if pool.any() else eligible


def _drawn_shares(rows: Callable[[int], np.ndarray], size: int, most: int, chunk: int,
                  focus: int | None, rel_se: float) -> np.ndarray:
    """The mean share per strategy over ``most`` rows of draws, made ``chunk`` at a time;
    with a ``focus``, stopping once that strategy's share has a standard error within
    ``rel_se`` of it."""
    total, used, s1, s2 = np.zeros(size), 0, 0.0, 0.0
    while used < most:
        n = min(chunk, most - used)
        block = rows(n)
        total += block.sum(axis=0)
        used += n
        if focus is None:
            continue
        v = block[:, focus]
        s1, s2 = s1 + float(v.sum()), s2 + float(v @ v)
        mean = s1 / used
        # Draws that all agree show no variance, but a share under 3 / n could be unseen
        # in n of them (the rule of three, 95%): the error is at least that.
        se = max(math.sqrt(max(s2 / used - mean * mean, 0.0) / used), 3.0 / used)
        if mean > 0 and se <= rel_se * mean:
            break
    return total / used


def gamma_upper_quantiles(shape: np.ndarray, exact_below: float = 10.0) -> np.ndarray:
    """Gamma(shape).ppf(1 - u) at 64 midpoint quantiles u, shape (64, S). At a shape of
    ``exact_below`` or more (a latency posterior's shape grows by a half per observation),
    the Wilson-Hilferty cube: relative error 5e-3 at 10, 3e-4 at 50, falling as
    1 / shape^2, which moves P(p95 <= limit) by under 1e-3; 8 µs for four strategies where
    ``gammainccinv`` takes 136 µs."""
    u = (np.arange(64) + 0.5) / 64.0
    c = 1.0 / (9.0 * np.maximum(shape, 1e-300))
    out = shape[None, :] * (1.0 - c + special.ndtri(1.0 - u)[:, None] * np.sqrt(c)) ** 3
    small = shape < exact_below
    if small.any():
        out[:, small] = special.gammainccinv(shape[None, small], u[:, None])
    return out


def _rows(x: np.ndarray, n: int) -> np.ndarray:
    """``x`` repeated as ``n`` rows: a read-only view, as ``np.broadcast_to`` gives, which
    costs ~4 µs a call where one row's ``x[None, :]`` costs a fraction of one (a decision
    makes several)."""
    if n != 1:
        return np.broadcast_to(x, (n, x.size))
    view = x[None, :]
    view.flags.writeable = False
    return view


def _beta(rng: np.random.Generator, a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """``rng.beta(a, b, size=(n, S))``. One row (a decision) is drawn value by value: the
    same numbers from the same stream, 5x faster for a handful of strategies (numpy's
    broadcasting of array parameters costs ~8 us a call, a scalar draw ~0.8 us)."""
    if n == 1:
        return np.array([[rng.beta(x, y) for x, y in zip(a.tolist(), b.tolist(),
                                                         strict=True)]])
    return rng.beta(a, b, size=(n, a.size))


def _gamma(rng: np.random.Generator, shape: np.ndarray, n: int) -> np.ndarray:
    """``rng.gamma(shape, 1.0, size=(n, S))``, a single row value by value (see ``_beta``)."""
    if n == 1:
        return np.array([[rng.gamma(x, 1.0) for x in shape.tolist()]])
    return rng.gamma(shape, 1.0, size=(n, shape.size))


def meet_log_probability(post: TaskPosterior, extra_ms: np.ndarray, cost: np.ndarray,
                         c: Constraints) -> np.ndarray:
    """log P(strategy meets the constraints) under the posterior, for the relaxed choice.

    Quality: the Beta tail; latency: the Student-t predictive of the mean log latency at
    the posterior-mean sigma; cost: a large penalty growing with the overshoot.
    """
    # Log-probabilities, so that two tiny probabilities still rank (no underflow ties).
    logp = np.zeros(len(post.strategies))
    if c.min_quality is not None:
        a, b = post.quality_params()
        p_q = special.betaincc(a, b, c.min_quality)
        z_q = (a / (a + b) - c.min_quality) / post.quality_std()
        logp += np.where(p_q > 1e-300, np.log(np.maximum(p_q, 1e-300)), special.log_ndtr(z_q))
    if c.max_latency_ms is not None:
        mu, kappa, la, lb = post.latency_params()
        room = c.max_latency_ms - extra_ms
        sigma = np.sqrt(lb / np.maximum(la - 1.0, 0.5))
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (np.log(np.maximum(room, 1e-9)) - Z95 * sigma - mu) / np.sqrt(lb / (la * kappa))
        p_l = special.stdtr(2.0 * la, z)
        logp += np.where(room > 0, np.where(p_l > 1e-300, np.log(np.maximum(p_l, 1e-300)),
                                            special.log_ndtr(z)), -1e6)
    if c.max_cost_usd is not None:
        over = np.maximum(cost / max(c.max_cost_usd, 1e-300), 1.0)
        logp -= np.where(cost <= c.max_cost_usd, 0.0, 50.0 + np.log(over))
    # Ties: prefer the cheaper one.
    return logp - 1e-9 * cost / (1.0 + cost.max())


def priced_choice(q: np.ndarray, cost: np.ndarray, feasible: np.ndarray,
                  price: float) -> np.ndarray:
    """Per row, the feasible strategy with the most drawn quality net of priced cost
    (quality - price x cost): the Lagrangian of "cheapest traffic meeting the target",
    chosen per prompt; -1 where nothing is feasible."""
    score = np.where(feasible, q - price * cost[None, :], -np.inf)
    best = np.argmax(score, axis=1)
    return np.where(feasible.any(axis=1), best, -1)


def prompt_candidates(post: TaskPosterior, cost: np.ndarray, eligible: np.ndarray,
                      safe: int = -1, target: float | None = None) -> np.ndarray:
    """The strategies a per-prompt choice may take, and the target's ``safe`` strategy:
    under a ``target``, the two the task level's cheapest mix meeting it uses at the
    posterior means (the prompt then decides which of its prompts go to the cheaper
    one); without one, the task type's efficient frontier (task-level mean quality
    against predicted cost).

    Choosing per prompt among many strategies picks, for each prompt, whichever
    prediction errs high (the winner's curse): on RouterBench's test split, with the
    contextual model warm-started from the train split (its predictions within 0.02 of
    the truth per dataset), weak models took the prompts they looked good on and the
    realized quality fell short, which the target's controller bought back with GPT-4.
    Among all 11 models per-prompt routing cost 0.53 of GPT-4, among the frontier (4 of
    them) 0.43. Learning online, the frontier still let the cheapest model (Mistral-7B,
    0.67 on ARC) take ARC prompts its noisy weights rated high; with the mix's pair,
    per-prompt routing on ``replay --seeds 10`` cost 0.620 of GPT-4 against 0.646."""
    mask = np.zeros(len(eligible), dtype=bool)
    q, c, ok = post.quality_mean().tolist(), cost.tolist(), eligible.tolist()
    if target is not None:
        low, high, _, _ = mix_row(q, c, ok, target)
        mask[[j for j in (low, high) if j >= 0]] = True
    else:
        mask[frontier(q, c, ok)] = True
    if safe >= 0:
        mask[safe] = bool(eligible[safe])
    return mask


def solve_price(means: np.ndarray, costs: np.ndarray, eligible: np.ndarray,
                target: float) -> float:
    """The price of quality at which choosing, per prompt, the best quality net of priced
    cost meets the target on average over a sample of recent prompts: ``means`` (K, S)
    are their predicted qualities, ``costs`` (K, S) their costs in units of the
    reference's. The highest price (the cheapest traffic) that still meets the target;
    the lowest one on the grid when none does."""
    grid = np.geomspace(1e-4, 1e2, 73)
    score = np.where(eligible[None, None, :],
                     means[None] - grid[:, None, None] * costs[None], -np.inf)
    pick = np.argmax(score, axis=2)  # (G, K)
    quality = np.take_along_axis(np.broadcast_to(means, (len(grid), *means.shape)),
                                 pick[..., None], axis=2)[..., 0].mean(axis=1)
    ok = np.flatnonzero(quality >= target)
    return float(grid[ok[-1]]) if ok.size else float(grid[0])


def held_back(post: TaskPosterior, spec: TargetSpec | None, eligible: np.ndarray,
              context: PromptContext | None = None,
              greedy: frozenset[int] = frozenset()) -> np.ndarray:
    """Strategies the conservative check replaces by ``spec.safe`` right now (judged
    on this prompt's predicted quality when the contextual posterior has one).

    Per prompt, the greedy choice (``greedy``, at the predicted means) is not held
    back when its predicted quality meets the target: it does not draw on the surplus
    in expectation, while mean - std of a many-weight model is under the target for
    nearly every prompt, easy ones too (benchmarks/RESULTS.md, "Warm start")."""
    n = len(post.strategies)
    if spec is None or spec.safe < 0 or not eligible[spec.safe]:
        return np.zeros(n, dtype=bool)
    if context is not None:
        mean, std = context.mean, np.sqrt(context.var)
    else:
        mean, std = post.quality_mean(), post.quality_std()
    if not spec.trusted and mean[spec.safe] < spec.base:
        return np.zeros(n, dtype=bool)  # no strategy is known to keep it: explore
    held = spec.surplus + (mean - spec.confidence * std - spec.base) < 0.0
    held[spec.safe] = False
    if context is not None:
        exploit = [g for g in greedy if g >= 0 and mean[g] >= spec.base]
        held[exploit] = False
    return held


def thin_strategies(post: TaskPosterior, spec: TargetSpec | None, cost: np.ndarray,
                    probe_trials: float) -> np.ndarray:
    """Probe-able strategies whose quality posterior weighs less than
    ``probe_trials`` observations (its prior's weight included: priors fitted by
    ``conductor calibrate`` count as what they are, evidence from earlier traffic): not
    served, probed when a draw wants them (deterministic given the state, so
    propensities stay exact)."""
    if spec is None:
        return np.zeros(cost.size, dtype=bool)
    a, b = post.quality_params()
    return probeable(spec, cost) & (a + b < probe_trials)


def probeable(spec: TargetSpec, cost: np.ndarray) -> np.ndarray:
    """Strategies cheap enough to probe rather than serve: predicted cost at most
    ``spec.probe_ratio`` x the safe strategy's (none without probes or a safe strategy)."""
    if spec.probe_ratio <= 0.0 or spec.safe < 0:
        return np.zeros(cost.size, dtype=bool)
    ok = cost <= spec.probe_ratio * cost[spec.safe]
    ok[spec.safe] = False
    return ok


def at_base(spec: TargetSpec | None) -> TargetSpec | None:
    """The target itself, not moved by the controller, no conservative check and no
    probes: what a strategy's usefulness is judged against (a passing deficit must not set
    it aside, nor a strategy held back to be probed)."""
    if spec is None:
        return None
    return TargetSpec(target=spec.base, base=spec.base, surplus=math.inf, safe=spec.safe,
                      trusted=spec.trusted)


def mix_propensity(p_policy: float, chosen_is_default: bool, rollout_share: float) -> float:
    """Propensity under a rollout: share through the policy, the rest to the default."""
    p = rollout_share * p_policy + (1.0 - rollout_share) * (1.0 if chosen_is_default else 0.0)
    return float(min(1.0, max(0.0, p)))


def eligible_mask(names: Sequence[str], allowed: Sequence[str]) -> np.ndarray:
    allowed_set = set(allowed)
    return np.array([n in allowed_set for n in names], dtype=bool)
