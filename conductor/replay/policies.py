"""Policies the replay harness compares, all behind one small interface.

A policy sees the prompt's task type and which models are eligible, picks one, and is
told only that model's observed quality, cost and latency. Bars are per-task minimum
mean qualities (``min_quality``).
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from conductor.bandit.context import ContextModel
from conductor.bandit.features import Featurizer
from conductor.bandit.policy import (
    StrategyTable,
    TargetSpec,
    ThompsonPolicy,
)
from conductor.bandit.posterior import Prior, TaskPosterior
from conductor.bandit.priors import policy_params
from conductor.bandit.prompts import PromptPricer
from conductor.bandit.targets import TargetState
from conductor.coefficients import ContextPriors, start_contexts
from conductor.config import PolicyConfig
from conductor.evaluators.calibration import JudgeErrorRates
from conductor.learning import (
    correct_reward,
    learn_first_reward,
    read_judged_through,
    scale_of,
)
from conductor.replay.world import World
from conductor.types import Constraints


class ReplayPolicy(Protocol):
    name: str

    def reset(self, world: World, bars: dict[str, float], rng: np.random.Generator) -> None: ...

    def choose(self, i: int, task: str, eligible: np.ndarray) -> int: ...

    def update(self, i: int, task: str, j: int, quality: float | None, cost: float,
               latency_ms: float) -> None:
        """An answer's cost and latency, and its judged quality (None: not judged)."""


class ConductorPolicy:
    """Conductor's policy (the same ThompsonPolicy and quality-target rule the router uses).

    Each task type's bar is its quality *target*: the cheapest mix of models meeting it,
    with the deficit controller and the conservative check against ``reference`` (the
    strongest model: the incumbent an operator states the target against), and the
    shortlist that sets dominated models aside. With ``floors=True`` the bars are
    per-request floors instead (the rule before targets existed). ``min_quality`` adds a
    per-request floor by task type, on top of the target (a floor applies to each
    request's predicted quality; the target to the mean served).

    Cost is learned per (task, model) as a running mean, starting from each model's list
    price level (its mean cost over the table, weight 2) — what an operator knows from the
    price sheet. Quality starts from ``prior_quality`` (strength 2) or fitted priors.
    """

    def __init__(self, temperature: float = 1.0, *, name: str | None = None,
                 prior_quality: float = 0.5, prior_strength: float = 2.0,
                 max_latency_ms: float | None = None,
                 priors: dict[str, dict[str, Prior]] | None = None,
                 reference: str | None = None, floors: bool = False,
                 min_quality: dict[str, float] | None = None,
                 params: PolicyConfig | None = None, context: bool | None = None,
                 context_priors: ContextPriors | None = None) -> None:
        self.t = temperature
        self.name = name or f"conductor(t={temperature:g})"
        self.prior_quality = prior_quality
        self.prior_strength = prior_strength
        self.max_latency_ms = max_latency_ms
        self.priors = priors or {}
        self.reference = reference
        self.floors = floors
        self.min_quality = min_quality or {}
        # The replay judges the whole run, so the target's window is the whole run too.
        self.params = params or PolicyConfig(default_strategy="-", target_decay=False)
        self.policy = ThompsonPolicy(policy_params(self.params))
        self.gamma = self.params.target_gamma()
        self.context = self.params.context if context is None else context
        self.context_priors = context_priors
        if context is not None and name is None:
            self.name += ", per prompt" if context else ", per task"

    def reset(self, world: World, bars: dict[str, float], rng: np.random.Generator) -> None:
        self.rng = rng
        self.models = world.models
        k = len(world.models)
        mean_cost = np.nan_to_num(np.nanmean(np.where(np.isnan(world.quality), np.nan,
                                                      world.cost), axis=0), nan=1.0)
        self.table = StrategyTable(names=tuple(world.models), input_price=(0.0,) * k,
                                   output_price=(1.0,) * k, discount=(1.0,) * k,
                                   extra_latency_ms=(0.0,) * k, draft=(-1,) * k,
                                   escalate=(-1,) * k)
        self.posts: dict[str, TaskPosterior] = {}
        for task in world.tasks():
            pri = []
            for j, m in enumerate(world.models):
                fitted = self.priors.get(task, {}).get(m)
                base = Prior(quality_alpha=self.prior_quality * self.prior_strength,
                             quality_beta=(1 - self.prior_quality) * self.prior_strength,
                             latency_mu=math.log(1000.0), latency_b=0.5,
                             output_tokens=float(mean_cost[j]), output_tokens_weight=2.0)
                if fitted is not None and fitted.is_valid():
                    base = Prior(quality_alpha=fitted.quality_alpha,
                                 quality_beta=fitted.quality_beta,
                                 latency_mu=fitted.latency_mu, latency_kappa=fitted.latency_kappa,
                                 latency_a=fitted.latency_a, latency_b=fitted.latency_b,
                                 output_tokens=float(mean_cost[j]), output_tokens_weight=2.0)
                pri.append(base)
            self.posts[task] = TaskPosterior(world.models, pri)
        self.bars = bars
        self.targets = {task: TargetState() for task in world.tasks()}
        self.probe = -1  # what the last choice probes (the harness reads it)
        # Judge calibration from delayed user labels (see ``label``): per task type the
        # judge's error rates, pooled over task types as the prior (the router's rule).
        pooled = JudgeErrorRates()
        self.calibration = {task: JudgeErrorRates(pooled=pooled) for task in world.tasks()}
        self.constraints = {task: Constraints(min_quality=bar if self.floors
                                              else self.min_quality.get(task),
                                              max_latency_ms=self.max_latency_ms)
                            for task, bar in bars.items()}
        self.safe = world.models.index(self.reference) if self.reference else -1
        self.shortlist: dict[str, tuple[float, np.ndarray]] = {}
        self.deficits: dict[str, list[float]] = {task: [] for task in world.tasks()}
        self.features: np.ndarray | None = None
        self.contexts: dict[str, ContextModel] = {}
        self.pricers = {task: PromptPricer(self.params.context_reservoir)
                        for task in world.tasks()}
        if self.context:
            featurize = Featurizer(self.params.context_dim, self.params.context_seed)
            self.features = np.array([featurize(text) for text in world.prompts]) if (
                world.prompts) else np.zeros((len(world.ids), featurize.size))
            p = self.params
            self.contexts = {task: ContextModel.for_task(self.posts[task], p)
                             for task in world.tasks()}
            start_contexts(self.contexts, self.context_priors, p)

    def spec(self, task: str, eligible: np.ndarray) -> TargetSpec | None:
        return None if self.floors else self.policy.target_spec(
            self.bars[task], self.targets[task], self.posts[task], eligible, self.safe,
            self.params.probe_cost_ratio)

    def _set_aside(self, task: str, spec: TargetSpec | None) -> np.ndarray:
        post = self.posts[task]
        at, mask = self.shortlist.get(task, (-math.inf, np.zeros(len(self.models), bool)))
        if post.observations - at < self.params.shortlist_every:
            return mask
        mask = np.zeros(len(self.models), bool)
        mask[list(self.policy.shortlist(post, self.table, np.ones(len(self.models), bool),
                                        self.constraints[task], 0, self.rng, spec))] = True
        self.shortlist[task] = (post.observations, mask)
        return mask

    def choose(self, i: int, task: str, eligible: np.ndarray) -> int:
        spec = self.spec(task, eligible)
        el = eligible & ~self._set_aside(task, spec)
        if not el.any():
            el = eligible
        context = None
        if self.features is not None:
            post = self.posts[task]  # the cost rides in the output-token slot
            context = self.pricers[task].context(self.contexts[task], post, self.features[i],
                                                 post.output_tokens(), el, spec)
        choice, _ = self.policy.decide_full(self.posts[task], self.table, el,
                                            self.constraints[task], 0, self.t, self.rng, spec,
                                            context)
        self.probe = choice.probe  # the harness runs it off the served stream
        return choice.index

    def quality_std(self, task: str, j: int) -> float:
        """The posterior's standard deviation of a strategy's quality (the judge samples
        more where it is wide)."""
        return float(self.posts[task].quality_std()[j])

    def update(self, i: int, task: str, j: int, quality: float | None, cost: float,
               latency_ms: float) -> None:
        """An answer and its judged score (``quality``), learned as the router learns
        it: kept apart as a judged reward and read through the judge's error rates once
        user labels have measured them. An answer not judged teaches its cost and latency
        only (the router's too)."""
        post = self.posts[task]
        m = self.models[j]
        # Cost rides in the token slot: price 1 per "token", so the mean is the cost.
        post.observe_outcome(m, latency_ms, cost, None, 1.0)
        if quality is None:
            return
        self._learn(i, task, j, quality, judged=True)
        state = self.targets[task]
        self.deficits[task].append(state.deficit(self.bars[task]) / max(state.count, 1.0))

    def update_probe(self, i: int, task: str, j: int, quality: float, cost: float,
                     latency_ms: float) -> None:
        """A probe's answer (model j run on prompt i off the served stream) and its judged
        score: learned as the router learns a probe, outside the target's window."""
        self.posts[task].observe_outcome(self.models[j], latency_ms, cost, None, 1.0)
        self._learn(i, task, j, quality, judged=True, served=False)

    def _learn(self, i: int, task: str, j: int, reward: float, judged: bool,
               served: bool = True) -> None:
        """Prompt i's first reward, learned as the router learns it (the per-prompt model
        too, when deciding per prompt)."""
        learn_first_reward(self.posts[task], self.targets[task], self.contexts.get(task),
                           self.models[j], reward, judged=judged, gamma=self.gamma,
                           target_gamma=self.gamma,
                           z=self.features[i] if self.features is not None else None,
                           served=served)

    def label(self, i: int, task: str, j: int, judged: float | None, truth: float) -> None:
        """A user's label for an earlier answer: it replaces that answer's judged score
        and teaches the judge's error rates, through which every judged reward of every
        task type is then read again (those learned before the rates existed too). The
        label of an answer nobody judged is its first reward, and no calibration pair."""
        post, m = self.posts[task], self.models[j]
        if judged is None:
            self._learn(i, task, j, truth, judged=False)
            return
        self.calibration[task].add(judged, truth)
        correct_reward(post, self.targets[task], self.contexts.get(task), m, judged, truth,
                       was_judged=True, judged=False,
                       z=self.features[i] if self.features is not None else None)
        for t in self.posts:  # the pooled rates moved: every task type's did
            read_judged_through(scale_of(self.calibration[t]), self.posts[t], self.targets[t],
                                self.contexts.get(t))

    def estimated_quality(self, task: str) -> float | None:
        """What the policy believes the traffic it served is worth (the target's window)."""
        return self.targets[task].mean()

    def judge_error_estimate(self, task: str) -> dict[str, float]:
        """The judge's false-positive and false-negative rates as this task type's
        calibration uses them, the 90% interval of the false-positive rate from its own
        labels, and how many wrong and right answers were labelled."""
        cal = self.calibration[task]
        fp, fn = cal.rates()
        (fp_lo, fp_hi), _ = cal.intervals()
        return {"judge_fp_estimate": fp, "judge_fn_estimate": fn, "judge_fp_90_low": fp_lo,
                "judge_fp_90_high": fp_hi, "wrong_labels": float(cal.wrong),
                "right_labels": float(cal.right)}


class _Means:
    """Running mean quality and cost per (task, model)."""

    def reset(self, world: World, bars: dict[str, float], rng: np.random.Generator) -> None:
        self.rng = rng
        self.bars = bars
        k = len(world.models)
        self.n = {t: np.zeros(k) for t in world.tasks()}
        self.nc = {t: np.zeros(k) for t in world.tasks()}
        self.q = {t: np.zeros(k) for t in world.tasks()}
        self.c = {t: np.zeros(k) for t in world.tasks()}
        self.mean_cost = np.nan_to_num(np.nanmean(np.where(np.isnan(world.quality), np.nan,
                                                           world.cost), axis=0), nan=1.0)

    def update(self, i: int, task: str, j: int, quality: float | None, cost: float,
               latency_ms: float) -> None:
        self.nc[task][j] += 1
        self.c[task][j] += (cost - self.c[task][j]) / self.nc[task][j]
        if quality is not None:  # n counts judged answers: what the mean quality rests on
            self.n[task][j] += 1
            self.q[task][j] += (quality - self.q[task][j]) / self.n[task][j]

    def cost_est(self, task: str) -> np.ndarray:
        return np.where(self.nc[task] > 0, self.c[task], self.mean_cost)

    def cheapest_meeting(self, task: str, score: np.ndarray, eligible: np.ndarray) -> int:
        ok = eligible & (score >= self.bars[task])
        if ok.any():
            return int(np.argmin(np.where(ok, self.cost_est(task), np.inf)))
        return int(np.argmax(np.where(eligible, score, -np.inf)))


class EpsilonGreedy(_Means):
    """With probability epsilon a random eligible model; otherwise the cheapest whose mean
    quality meets the bar (untried models count as meeting it)."""

    def __init__(self, epsilon: float = 0.1) -> None:
        self.epsilon = epsilon
        self.name = "epsilon-greedy"

    def choose(self, i: int, task: str, eligible: np.ndarray) -> int:
        if self.rng.random() < self.epsilon:
            return int(self.rng.choice(np.flatnonzero(eligible)))
        score = np.where(self.n[task] > 0, self.q[task], 1.0)
        return self.cheapest_meeting(task, score, eligible)


class UCB1(_Means):
    """Optimism under uncertainty: the cheapest model whose UCB1 index
    (mean + sqrt(2 ln N / n)) meets the bar."""

    name = "ucb1"

    def choose(self, i: int, task: str, eligible: np.ndarray) -> int:
        n = self.n[task]
        total = max(1.0, n.sum())
        with np.errstate(divide="ignore"):
            bonus = np.where(n > 0, np.sqrt(2.0 * math.log(total) / np.maximum(n, 1)), np.inf)
        return self.cheapest_meeting(task, self.q[task] + bonus, eligible)


class RandomPolicy:
    name = "random"

    def reset(self, world: World, bars: dict[str, float], rng: np.random.Generator) -> None:
        self.rng = rng

    def choose(self, i: int, task: str, eligible: np.ndarray) -> int:
        return int(self.rng.choice(np.flatnonzero(eligible)))

    def update(self, *args: object) -> None:
        return None


class AlwaysModel:
    def __init__(self, model: str) -> None:
        self.model = model
        self.name = f"always:{model}"

    def reset(self, world: World, bars: dict[str, float], rng: np.random.Generator) -> None:
        self.j = world.models.index(self.model)
        self.quality = world.quality

    def choose(self, i: int, task: str, eligible: np.ndarray) -> int:
        return self.j if eligible[self.j] else int(np.argmax(eligible))

    def update(self, *args: object) -> None:
        return None


class BestFixedPerTask:
    """In hindsight, per task: the cheapest model whose mean quality meets the bar (else the
    best one). The baseline regret is measured against."""

    name = "best-fixed-per-task"

    def reset(self, world: World, bars: dict[str, float], rng: np.random.Generator) -> None:
        self.choice: dict[str, int] = {}
        for task in world.tasks():
            rows = world.task_index(task)
            q = np.nanmean(world.quality[rows], axis=0)
            c = np.nanmean(world.cost[rows], axis=0)
            ok = q >= bars[task]
            self.choice[task] = int(np.argmin(np.where(ok, c, np.inf))) if ok.any() else int(
                np.nanargmax(q))

    def choose(self, i: int, task: str, eligible: np.ndarray) -> int:
        j = self.choice[task]
        return j if eligible[j] else int(np.argmax(eligible))

    def update(self, *args: object) -> None:
        return None


class Oracle:
    """Per prompt, in hindsight: the cheapest model with that prompt's best quality."""

    name = "oracle"

    def reset(self, world: World, bars: dict[str, float], rng: np.random.Generator) -> None:
        self.world = world

    def choose(self, i: int, task: str, eligible: np.ndarray) -> int:
        q = np.where(eligible, self.world.quality[i], -np.inf)
        best = q >= q.max() - 1e-12
        return int(np.argmin(np.where(best, self.world.cost[i], np.inf)))

    def update(self, *args: object) -> None:
        return None
