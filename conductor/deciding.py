"""Deciding: the policy's choice for one request, its trace, and its propensity.

The decision is made on the request path; its propensity (the probability the logging
policy chose it, which ``compare`` needs) is computed afterwards from a copy of the
posterior taken at decision time, so the answer never waits for it.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from typing import Any

import msgspec
import numpy as np

from conductor.bandit.features import Featurizer
from conductor.bandit.policy import (
    PromptContext,
    TargetSpec,
    ThompsonPolicy,
    eligible_mask,
    mix_propensity,
    predict_costs,
)
from conductor.bandit.posterior import TaskPosterior
from conductor.bandit.priors import build_strategy_table, policy_params, target_base
from conductor.bandit.prompts import PromptPricer
from conductor.config import RelativeTarget, Settings
from conductor.errors import InvalidRequestError, NoStrategyAvailableError, UnknownStrategyError
from conductor.learning import Learner
from conductor.types import (
    CompletionRequest,
    Constraints,
    Decision,
    GenerationParams,
    StrategySample,
    estimate_prompt_tokens,
)


def make_request(prompt: str | None = None, *, messages: Any = None,
                 task_type: str | None = None, max_latency_ms: float | None = None,
                 min_quality: float | None = None, max_cost_usd: float | None = None,
                 quality_target: float | None = None,
                 client_id: str = "default", request_id: str | None = None,
                 max_tokens: int | None = None,
                 metadata: dict[str, Any] | None = None,
                 params: GenerationParams | dict[str, Any] | None = None) -> CompletionRequest:
    """Build a validated CompletionRequest from keyword arguments (``params``: sampling
    and output parameters, ``GenerationParams`` or its fields as a dict)."""
    limits = {"max_latency_ms": max_latency_ms, "min_quality": min_quality,
              "max_cost_usd": max_cost_usd, "quality_target": quality_target}
    raw: dict[str, Any] = {
        "prompt": prompt, "task_type": str(task_type or "chat"),
        "constraints": {k: v for k, v in limits.items() if v is not None},
        "client_id": client_id, "request_id": request_id or "", "max_tokens": max_tokens,
        "metadata": metadata or {}}
    if params is not None:
        raw["params"] = (msgspec.structs.asdict(params)
                         if isinstance(params, GenerationParams) else params)
    if messages is not None:
        raw["messages"] = [m if isinstance(m, dict) else msgspec.structs.asdict(m)
                           for m in messages]
    try:
        return msgspec.convert(raw, CompletionRequest)
    except msgspec.ValidationError as exc:
        raise InvalidRequestError(str(exc)) from exc



class Pending(msgspec.Struct, kw_only=True, frozen=True):
    """What a decision's propensity is computed from, after the answer has gone."""

    post: TaskPosterior
    eligible: np.ndarray
    constraints: Constraints
    input_tokens: int
    temperature: float
    share: float
    index: int
    default: int
    target: TargetSpec | None = None
    context: PromptContext | None = None


class Decider:
    """Makes decisions for one Conductor.

    Args:
        settings: strategies, task types, policy parameters.
        learner: the learned state the policy draws from (and the live knobs).
        unavailable: the strategies the policy must skip right now.
        seed: seeds the decision and propensity generators.
        dry_run: shadow mode (the decision is logged; the default strategy runs).
        clock: wall-clock seconds.
    """

    def __init__(self, settings: Settings, learner: Learner,
                 unavailable: Callable[[], set[str]], *, seed: int | None,
                 dry_run: bool, clock: Callable[[], float]) -> None:
        self.settings = settings
        self.learner = learner
        self.unavailable = unavailable
        self.dry_run = dry_run
        self.clock = clock
        self.rng = np.random.default_rng(seed)
        self.propensity_rng = np.random.default_rng(None if seed is None else [seed, 1])
        self.table = build_strategy_table(settings)
        self.policy = ThompsonPolicy(policy_params(settings.policy))
        self._eligible = {t: eligible_mask(self.table.names, settings.strategies_for(t))
                          for t in settings.task_types}
        # Each strategy's context window: its model's (a verified one's draft and escalation
        # models', whichever is smaller).
        self.windows = np.array([min(settings.models[m].context_window
                                     for m in settings.models_of(n)) for n in self.table.names])
        self._batching = np.array([settings.micro_batches(n) for n in self.table.names])
        self.shortlist_rng = np.random.default_rng(None if seed is None else [seed, 2])
        p = settings.policy
        self.featurizer = Featurizer(p.context_dim, p.context_seed) if p.context else None
        self._pricers = {t: PromptPricer(p.context_reservoir) for t in settings.task_types}
        # Per task type: the observation count it was computed at, and what is set aside.
        self._shortlists: dict[str, tuple[float, dict[str, str]]] = {}
        # Probes need a judge to grade what they learn from (``TargetSpec.probe_ratio``).
        self.probe_ratio = p.probe_cost_ratio if (
            settings.judge.strategy is not None and settings.judge.max_calls_per_hour > 0
        ) else 0.0

    def eligible(self, task: str) -> np.ndarray:
        """The strategies configured for a task type (before circuits and set-asides)."""
        return self._eligible[task].copy()

    def point_target(self, task: str) -> float | None:
        """The task type's target at the posterior mean of its reference (no caution)."""
        configured = self.settings.task_types[task].quality_target
        if isinstance(configured, RelativeTarget):
            post = self.learner.posteriors[task]
            mean = post.quality_mean()[post.index[configured.relative_to]]
            return configured.ratio * float(mean)
        return configured

    def target_spec(self, task: str, constraints: Constraints, post: TaskPosterior,
                    eligible: np.ndarray, client_id: str = "default") -> TargetSpec | None:
        """This decision's quality target: the task type's (absolute, or relative to its
        reference strategy), or the client's or the request's when stricter; None when none
        sets one. Callers hold the lock."""
        base, safe = target_base(self.settings, self.policy, task, post, client_id,
                                 constraints.quality_target)
        return self.policy.target_spec(base, self.learner.targets[task], post, eligible, safe,
                                       self.probe_ratio)

    def set_aside(self, task: str, post: TaskPosterior, constraints: Constraints,
                  input_tokens: int, spec: TargetSpec | None) -> dict[str, str]:
        """Strategies set aside from exploration, with why (``ThompsonPolicy.shortlist``),
        recomputed every ``shortlist_every`` observations of the task type."""
        at, cached = self._shortlists.get(task, (-math.inf, {}))
        if post.observations - at < self.settings.policy.shortlist_every:
            return cached
        out = {self.table.names[i]: why for i, why in self.policy.shortlist(
            post, self.table, self._eligible[task], constraints, input_tokens,
            self.shortlist_rng, spec).items()}
        self._shortlists[task] = (post.observations, out)
        return out

    def effective_constraints(self, request: CompletionRequest) -> Constraints:
        tt = self.settings.task_types[request.task_type]
        return request.constraints.merged_over(Constraints(
            max_latency_ms=tt.max_latency_ms, min_quality=tt.min_quality,
            max_cost_usd=tt.max_cost_usd))

    def decide(self, request: CompletionRequest, strategy: str | None = None
               ) -> tuple[Decision, Pending | None]:
        """The decision, and (when its propensity is not known yet) what computes it."""
        if request.task_type not in self.settings.task_types:
            raise InvalidRequestError(
                f"unknown task type {request.task_type!r}; valid: "
                f"{', '.join(sorted(self.settings.task_types))}", field="task_type")
        if not request.messages and not request.prompt:
            raise InvalidRequestError("give 'messages' or 'prompt'", field="messages")
        task, names = request.task_type, self.table.names
        constraints = self.effective_constraints(request)
        input_tokens = estimate_prompt_tokens(request.chat_messages())
        unavailable = self.unavailable()
        if strategy is not None:
            if strategy not in self.settings.strategies:
                raise UnknownStrategyError(strategy, ["auto", *names])
            if strategy in unavailable:
                raise NoStrategyAvailableError(
                    f"strategy {strategy!r} is unavailable (its circuit is open)")
        fits = self.windows >= input_tokens + (request.max_tokens or 0)
        eligible = self._eligible[task] & fits
        if not (fits[names.index(strategy)] if strategy is not None else eligible.any()):
            best = int(np.argmax(np.where(self._eligible[task], self.windows, -1)))
            raise InvalidRequestError(
                f"the prompt (~{input_tokens} tokens) plus max_tokens "
                f"({request.max_tokens or 0}) does not fit the context window of "
                f"{'strategy ' + repr(strategy) if strategy else 'any eligible strategy'}"
                f"; the largest is {int(self.windows[best])} tokens ({names[best]})",
                field="messages")
        if request.params is not None and request.params.shapes_output:
            eligible = self._unbatched(request, strategy, eligible)
        if unavailable:
            eligible &= ~eligible_mask(names, sorted(unavailable))
        if strategy is None and not eligible.any():
            raise NoStrategyAvailableError(f"no strategy is available for task type {task!r} "
                                           "(all circuits open or none configured)")
        knobs = self.learner.knobs
        t = knobs.exploration.get(task, 1.0)
        with self.learner.lock:
            post = self.learner.posteriors[task]
            spec = self.target_spec(task, constraints, post, eligible, request.client_id)
            set_aside = self.set_aside(task, post, constraints, input_tokens, spec)
            if set_aside and strategy is None:
                eligible &= ~eligible_mask(names, list(set_aside))
            z = self.featurizer(request.text()) if self.featurizer is not None else None
            context = self.prompt_context(task, post, z, eligible, input_tokens, spec)
            if context is not None and context.candidates is not None and strategy is None:
                set_aside = {**set_aside, **{
                    names[i]: "per prompt: under the task type's cost-quality frontier"
                    for i in np.flatnonzero(eligible & ~context.candidates)}}
            choice, greedy = self.policy.decide_full(post, self.table, eligible, constraints,
                                                     input_tokens, t, self.rng, spec, context)
            q_mean = post.quality_mean() if context is None else context.mean
            lat_mean = post.latency_mean_ms() + np.asarray(self.table.extra_latency_ms)
            certain = t <= 0 and spec is None  # greedy with no mix: the choice is certain
            snapshot = post.copy() if strategy is None and not certain else None
        share = knobs.rollout_percent / 100.0
        roll = float(self.rng.random()) if share < 1.0 else 0.0
        policy_idx, default = choice.index, names.index(knobs.default_strategy)
        if strategy is not None:
            idx, routed_by = names.index(strategy), "forced"
        elif self.dry_run:
            idx, routed_by = policy_idx, "shadow"
        elif roll >= share:
            idx, routed_by = default, "rollout_default"
        else:
            idx, routed_by = policy_idx, "policy"
        pending = None if snapshot is None else Pending(
            post=snapshot, eligible=eligible, constraints=constraints,
            input_tokens=input_tokens, temperature=t,
            share=1.0 if routed_by == "shadow" else share, index=idx, default=default,
            target=spec, context=context)
        propensity: float | None = 1.0
        if routed_by != "forced" and pending is None:  # temperature 0: greedy, so certain
            propensity = mix_propensity(float(idx in greedy), idx == default,
                                        1.0 if routed_by == "shadow" else share)
        name = names[idx]
        samples = tuple(StrategySample(
            strategy=n, quality=float(choice.quality[i]),
            latency_p95_ms=float(choice.latency_p95_ms[i]), cost_usd=float(choice.cost_usd[i]),
            feasible=bool(choice.feasible[i]),
            prompt_quality=float(context.mean[i]) if context is not None else None)
            for i, n in enumerate(names) if eligible[i] or i == idx)
        st = self.settings.strategies[name]
        decision = Decision(
            request_id=request.request_id or uuid.uuid4().hex, task_type=task, strategy=name,
            model=st.model, mode=st.mode, predicted_quality=float(q_mean[idx]),
            predicted_latency_ms=float(lat_mean[idx]),
            predicted_cost_usd=float(choice.cost_usd[idx]),
            propensity=None if pending is not None else propensity,
            explored=routed_by in ("policy", "shadow") and policy_idx not in greedy,
            constraint_relaxed=choice.relaxed and routed_by in ("policy", "shadow"),
            policy_version=knobs.version, routed_by=routed_by,  # type: ignore[arg-type]
            policy_choice=names[policy_idx], constraints=constraints,
            client_id=request.client_id, input_tokens=input_tokens, samples=samples,
            created_at=self.clock(), quality_target=spec.target if spec else None,
            set_aside=set_aside if strategy is None else {},
            held_back=choice.held_back and routed_by in ("policy", "shadow"),
            probe=names[choice.probe] if choice.probe >= 0 and routed_by == "policy" else None,
            per_prompt=context is not None, features=tuple(z.tolist()) if z is not None else (),
            quality_scale="calibrated" if post.calibrated else "as_scored")
        return decision, pending

    def _unbatched(self, request: CompletionRequest, strategy: str | None,
                   eligible: np.ndarray) -> np.ndarray:
        """The eligible strategies that do not micro-batch, for a request whose answer has
        a form of its own (a batch answers one JSON array for all its items)."""
        why = "response_format" if request.params and request.params.response_format else "stop"
        if strategy is not None and self._batching[self.table.names.index(strategy)]:
            raise InvalidRequestError(
                f"strategy {strategy!r} micro-batches requests (one JSON array answers them "
                f"all), so it cannot honour {why}; use model 'auto' or a direct strategy",
                field=why)
        out = eligible & ~self._batching
        if strategy is None and eligible.any() and not out.any():
            raise InvalidRequestError(
                f"task type {request.task_type!r} has only micro-batching strategies, which "
                f"cannot honour {why}", field=why)
        return out

    def prompt_context(self, task: str, post: TaskPosterior, z: np.ndarray | None,
                       eligible: np.ndarray, input_tokens: int,
                       spec: TargetSpec | None) -> PromptContext | None:
        """What the contextual posterior predicts for this prompt, once its predictions
        have beaten the task level's (``context_min_gain`` over ``context_min_rewards``);
        None until then (the task-level rule decides). Under a target, with the price of
        quality at which choosing per prompt meets the target over recent prompts.
        Callers hold the lock."""
        model = self.learner.contexts.get(task)
        if model is None or z is None:
            return None
        return self._pricers[task].context(model, post, z,
                                           predict_costs(self.table, post, input_tokens),
                                           eligible, spec)

    def with_propensity(self, decision: Decision, pending: Pending | None) -> Decision:
        """The decision with its propensity: P(policy picks it) mixed with the rollout."""
        if pending is None:
            return decision
        probs = self.policy.choice_probabilities(
            pending.post, self.table, pending.eligible, pending.constraints,
            pending.input_tokens, pending.temperature, self.propensity_rng,
            target=pending.target, context=pending.context, focus=pending.index)
        p = mix_propensity(float(probs[pending.index]), pending.index == pending.default,
                           pending.share)
        return msgspec.structs.replace(decision, propensity=p)

    def fallback_order(self, decision: Decision) -> list[str]:
        """Strategies to try after the chosen one: feasible by cost, then the rest by cost,
        never more than ``max_fallback_cost_ratio`` times the chosen one's predicted cost."""
        cap = decision.predicted_cost_usd * self.settings.policy.max_fallback_cost_ratio
        unavailable = self.unavailable()
        rest = [s for s in decision.samples if s.strategy != decision.strategy
                and s.strategy not in unavailable and s.cost_usd <= max(cap, 1e-12)]
        rest.sort(key=lambda s: (not s.feasible, s.cost_usd))
        return [s.strategy for s in rest]

