"""Conductor: decide -> execute -> record -> reward. No web framework, no database driver.

The router ties the pure policy (``bandit``) to providers, evaluators and a log store, all
reached through protocols, so each can be swapped (a fake upstream in tests, SQLite in
the service, a JSONL file for offline analysis).
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
import uuid
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

from conductor.bandit.policy import (
    PolicyParams,
    StrategyTable,
    ThompsonPolicy,
    eligible_mask,
    mix_propensity,
)
from conductor.bandit.posterior import PosteriorState, Prior
from conductor.config import Settings, default_settings, load_settings
from conductor.errors import (
    ConfigError,
    InvalidRequestError,
    JudgeError,
    NoStrategyAvailableError,
    NotFoundError,
    ProviderBadRequestError,
    ProviderError,
    UnknownStrategyError,
)
from conductor.evaluators.base import Evaluator, SimulatedQualityEvaluator
from conductor.evaluators.calibration import JudgeCalibration
from conductor.evaluators.fusion import RewardFusion
from conductor.evaluators.heuristics import heuristic_score, heuristics_for
from conductor.evaluators.judge import (
    JUDGE_MAX_TOKENS,
    JUDGE_PROMPT_TOKENS_BOUND,
    SCORE_GRAMMAR,
    JudgeRunner,
    JudgeSampler,
    judge_messages,
    parse_score,
    score_to_unit,
)
from conductor.providers.base import (
    Provider,
    ProviderCall,
    ProviderResponse,
    estimate_prompt_tokens,
)
from conductor.providers.batching import MicroBatcher
from conductor.providers.demo import DemoProvider, load_world
from conductor.providers.openai import OpenAIProvider
from conductor.providers.reliability import CircuitBreaker, call_with_retries
from conductor.storage.base import LogStore, MemoryLogStore, RequestRecord
from conductor.types import (
    CallRecord,
    CompletionRequest,
    CompletionResult,
    Constraints,
    Decision,
    Mode,
    Outcome,
    Reward,
    StrategySample,
)

Coefficients = dict[str, dict[str, Prior]]


class _Execution:
    """Mutable state of one request's execution (candidates tried, calls, result)."""

    def __init__(self, candidates: list[str], executed: str, chain: list[str],
                 deadline: float | None) -> None:
        self.candidates = candidates
        self.executed = executed
        self.chain = chain
        self.deadline = deadline
        self.calls: list[CallRecord] = []
        self.resp: ProviderResponse | None = None
        self.escalated = False
        self.error: str | None = None
        self.last_exc: ProviderError | None = None
        self.t0 = time.perf_counter()


log = logging.getLogger("conductor.router")


def load_coefficients(path: str | Path) -> Coefficients:
    """Read priors written by ``conductor calibrate``: {task_type: {strategy: Prior}}."""
    try:
        raw = Path(path).read_bytes()
        data = msgspec.json.decode(raw)
        tasks = data.get("priors", data) if isinstance(data, dict) else None
        return msgspec.convert(tasks, dict[str, dict[str, Prior]])
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read priors: {exc}") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{path}: not a priors file: {exc}") from exc


def rating_to_score(rating: float | int | bool | str) -> float:
    """Map a user rating to [0, 1]: thumbs (bool, 'up'/'down'), 1-5 stars (int), score (float)."""
    if isinstance(rating, bool):
        return 1.0 if rating else 0.0
    if isinstance(rating, str):
        r = rating.strip().lower()
        if r in ("up", "thumbs_up", "+1", "good"):
            return 1.0
        if r in ("down", "thumbs_down", "-1", "bad"):
            return 0.0
        raise InvalidRequestError(f"rating {rating!r}: expected 'up' or 'down'", field="rating")
    if isinstance(rating, int):
        if not 1 <= rating <= 5:
            raise InvalidRequestError(f"rating {rating}: stars must be 1-5", field="rating")
        return (rating - 1) / 4.0
    if isinstance(rating, float):
        if not (math.isfinite(rating) and 0.0 <= rating <= 1.0):
            raise InvalidRequestError(f"rating {rating}: a score must be in [0, 1]",
                                      field="rating")
        return rating
    raise InvalidRequestError(f"rating {rating!r}: unsupported type", field="rating")


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
            esc = st.verified.prior_escalation_rate if st.verified else 0.3
            row[sname] = Prior(
                quality_alpha=st.prior_quality * st.prior_strength,
                quality_beta=(1.0 - st.prior_quality) * st.prior_strength,
                latency_mu=math.log(st.prior_latency_ms),
                latency_kappa=1.0,
                latency_a=2.0,
                latency_b=st.prior_latency_sigma ** 2,
                output_tokens=st.prior_output_tokens or tt.expected_output_tokens,
                escalation_rate=esc,
            )
            if not row[sname].is_valid():  # prior_quality of exactly 0 or 1
                row[sname] = msgspec.structs.replace(
                    row[sname],
                    quality_alpha=max(row[sname].quality_alpha, 1e-3),
                    quality_beta=max(row[sname].quality_beta, 1e-3))
        out[tname] = row
    return out


def build_strategy_table(settings: Settings) -> StrategyTable:
    names = tuple(settings.strategies)
    index = {n: i for i, n in enumerate(names)}
    pin, pout, disc, extra, draft, esc = [], [], [], [], [], []
    for st in settings.strategies.values():
        m = settings.models[st.model]
        pin.append(m.input_usd_per_1m / 1e6)
        pout.append(m.output_usd_per_1m / 1e6)
        disc.append(st.batch_discount)
        extra.append(st.batch_window_ms)
        draft.append(index[st.verified.draft] if st.verified else -1)
        esc.append(index[st.verified.escalate_to] if st.verified else -1)
    judge = index[settings.judge.strategy] if settings.judge.strategy else -1
    return StrategyTable(names=names, input_price=tuple(pin), output_price=tuple(pout),
                         discount=tuple(disc), extra_latency_ms=tuple(extra),
                         draft=tuple(draft), escalate=tuple(esc), judge=judge)


def open_providers(settings: Settings) -> dict[str, Provider]:
    """Provider instances for the configured kinds (``demo``, ``openai``, ``local``)."""
    out: dict[str, Provider] = {}
    for name, pc in settings.providers.items():
        if pc.kind == "demo":
            out[name] = DemoProvider(name, load_world(pc.world), seed=pc.seed,
                                     simulate_latency=pc.simulate_latency,
                                     latency_scale=pc.latency_scale)
        elif pc.kind == "openai":
            if not pc.base_url:
                raise ConfigError(f"providers.{name}.base_url: required for kind 'openai'")
            out[name] = OpenAIProvider(name, pc)
        elif pc.kind == "local":
            from conductor.providers.local import LocalProvider

            out[name] = LocalProvider(name, pc)
        else:
            raise ConfigError(f"providers.{name}.kind: {pc.kind!r} is not available in this build")
    return out


class Conductor:
    """The router. ``Conductor()`` runs the built-in demo world end to end.

    Args:
        config: Settings, a TOML path, or None for the built-in default.
        coefficients: fitted priors (``load_coefficients``), overriding the config's priors.
        policy_version: overrides ``policy.version``; recorded with every decision.
        log_store: where decisions, outcomes and rewards go (default: in memory).
        dry_run: shadow mode: decide and log, but always execute the default strategy.
        providers: provider instances by config name (default: built from the config).
        evaluators: extra reward sources run on every answer (default: the demo world's
            simulated signal when a demo provider is configured). The task types'
            heuristics and the sampled judge always run.
        seed: seeds the policy's random generator (default: ``policy.seed`` or entropy).
        clock: wall-clock seconds, injectable for tests.
    """

    def __init__(
        self,
        config: Settings | str | Path | None = None,
        *,
        coefficients: Coefficients | None = None,
        policy_version: str | None = None,
        log_store: LogStore | None = None,
        dry_run: bool = False,
        providers: Mapping[str, Provider] | None = None,
        evaluators: Sequence[Evaluator] | None = None,
        seed: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if config is None:
            settings = default_settings()
        elif isinstance(config, Settings):
            settings = config
        else:
            settings = load_settings(config)
        self.settings = settings
        self.policy_version = policy_version or settings.policy.version
        self.log_store: LogStore = log_store if log_store is not None else MemoryLogStore()
        self.dry_run = dry_run
        self.clock = clock
        self.providers: dict[str, Provider] = (
            dict(providers) if providers is not None else open_providers(settings))
        for name, m in settings.models.items():
            if m.provider not in self.providers:
                raise ConfigError(f"models.{name}.provider: no provider {m.provider!r} opened")
        if evaluators is None:
            demo = any(isinstance(p, DemoProvider) for p in self.providers.values())
            evaluators = [SimulatedQualityEvaluator()] if demo else []
        self.evaluators: list[Evaluator] = list(evaluators)
        self.heuristics = {t: heuristics_for(t, tt.heuristics, tt.labels, tt.max_words)
                           for t, tt in settings.task_types.items()}
        jc = settings.judge
        self.judge_sampler = JudgeSampler(max_calls_per_hour=jc.max_calls_per_hour,
                                          reference_std=jc.uncertainty_reference_std)
        self.judge_runner = JudgeRunner(workers=jc.workers, queue_size=jc.queue_size)
        self.calibrations = {t: JudgeCalibration(min_pairs=jc.min_calibration_pairs)
                             for t in settings.task_types}
        self.fusion = RewardFusion(
            lambda task, s: self.calibrations[task].apply(s) if task in self.calibrations
            else s)
        self._pending_feedback: dict[str, list[tuple[float, str, float]]] = {}
        s = seed if seed is not None else settings.policy.seed
        self.rng = np.random.default_rng(s)
        self.propensity_rng = np.random.default_rng(None if s is None else [s, 1])
        self.table = build_strategy_table(settings)
        self.posteriors = PosteriorState(build_priors(settings, coefficients))
        self.policy = ThompsonPolicy(PolicyParams(
            quality_per_usd=settings.policy.quality_per_usd,
            wide_posterior_trials=settings.policy.wide_posterior_trials,
            guard_floor=settings.policy.guard_floor,
            propensity_draws=settings.policy.propensity_draws))
        self.temperatures = {t: settings.temperature(t) for t in settings.task_types}
        self.rollout_percent = settings.policy.rollout_percent
        self.default_strategy = settings.policy.default_strategy
        self.frozen = settings.policy.freeze
        self.gamma = 0.5 ** (1.0 / settings.policy.half_life) if settings.policy.half_life else 1.0
        self._eligible = {t: eligible_mask(self.table.names, settings.strategies_for(t))
                          for t in settings.task_types}
        self._unavailable: set[str] = set()  # strategies switched off by hand
        # One breaker per (provider, upstream model); configured models naming the same
        # upstream model share it.
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}
        self._breaker_of: dict[str, CircuitBreaker] = {}
        for name, m in settings.models.items():
            cc = settings.providers[m.provider].circuit
            self._breaker_of[name] = self._breakers.setdefault(
                (m.provider, m.upstream_name or name), CircuitBreaker(
                    consecutive_failures=cc.consecutive_failures, failure_rate=cc.failure_rate,
                    window=cc.window, min_calls=cc.min_calls, cooldown_s=cc.cooldown_s))
        self._batchers: dict[tuple[str, str], MicroBatcher] = {}
        self.counters: dict[str, float] = {
            "retries": 0, "fallbacks": 0, "circuit_opened": 0, "judge_calls": 0,
            "judge_failures": 0, "judge_cost_usd": 0.0, "judge_self_graded": 0}
        self._lock = threading.RLock()
        self._feedback_lock = threading.Lock()
        # Called with (request, decision, outcome) after every outcome (metrics hook).
        self.on_outcome: Callable[[CompletionRequest, Decision, Outcome], None] | None = None
        # Called with (task type, new effective reward, previous one) when it changes.
        self.on_reward: Callable[[str, float, float | None], None] | None = None
        self._closed = False
        self._last_snapshot = clock()
        self.restore()
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- deciding --------------------------------------------------------------------------

    def make_request(self, prompt: str | None = None, *, messages: Any = None,
                     task_type: str | None = None, max_latency_ms: float | None = None,
                     min_quality: float | None = None, max_cost_usd: float | None = None,
                     client_id: str = "default", request_id: str | None = None,
                     max_tokens: int | None = None,
                     metadata: dict[str, Any] | None = None) -> CompletionRequest:
        """Build a validated CompletionRequest from keyword arguments."""
        raw: dict[str, Any] = {
            "prompt": prompt, "task_type": str(task_type or "chat"),
            "constraints": {k: v for k, v in (("max_latency_ms", max_latency_ms),
                                              ("min_quality", min_quality),
                                              ("max_cost_usd", max_cost_usd)) if v is not None},
            "client_id": client_id, "request_id": request_id or "", "max_tokens": max_tokens,
            "metadata": metadata or {},
        }
        if messages is not None:
            raw["messages"] = [m if isinstance(m, dict) else msgspec.structs.asdict(m)
                               for m in messages]
        try:
            return msgspec.convert(raw, CompletionRequest)
        except msgspec.ValidationError as exc:
            raise InvalidRequestError(str(exc)) from exc

    def _check_request(self, request: CompletionRequest) -> None:
        if request.task_type not in self.settings.task_types:
            raise InvalidRequestError(
                f"unknown task type {request.task_type!r}; valid: "
                f"{', '.join(sorted(self.settings.task_types))}", field="task_type")
        if not request.messages and not request.prompt:
            raise InvalidRequestError("give 'messages' or 'prompt'", field="messages")

    def effective_constraints(self, request: CompletionRequest) -> Constraints:
        tt = self.settings.task_types[request.task_type]
        return request.constraints.merged_over(Constraints(
            max_latency_ms=tt.max_latency_ms, min_quality=tt.min_quality,
            max_cost_usd=tt.max_cost_usd))

    def set_available(self, strategy: str, available: bool) -> None:
        """Switch a strategy off (or back on) by hand; open circuits do this on their own."""
        with self._lock:
            (self._unavailable.discard if available else self._unavailable.add)(strategy)

    def _models_of(self, strategy: str) -> list[str]:
        st = self.settings.strategies[strategy]
        if st.verified is not None:
            return [self.settings.strategies[st.verified.draft].model]
        return [st.model]

    def breaker(self, model: str) -> CircuitBreaker:
        """The circuit breaker of a configured model's (provider, upstream model)."""
        return self._breaker_of[model]

    def unavailable(self) -> set[str]:
        """Strategies the policy must skip: switched off, or a model's circuit is open."""
        out = set(self._unavailable)
        if all(b.state == "closed" for b in self._breakers.values()):
            return out  # the common case, checked without walking the strategies
        for s in self.settings.strategies:
            if any(not self.breaker(m).available() for m in self._models_of(s)):
                out.add(s)
        return out

    def predict_only(self, request: CompletionRequest | None = None, /, **kwargs: Any) -> Decision:
        """Decide, call nothing. Takes a CompletionRequest or ``make_request`` keywords."""
        req = request if request is not None else self.make_request(**kwargs)
        return self.decide(req)

    async def apredict_only(self, request: CompletionRequest | None = None, /,
                            **kwargs: Any) -> Decision:
        return self.predict_only(request, **kwargs)

    def decide(self, request: CompletionRequest, *, strategy: str | None = None) -> Decision:
        """The policy's decision for a request (or a forced ``strategy``)."""
        self._check_request(request)
        rid = request.request_id or uuid.uuid4().hex
        task = request.task_type
        constraints = self.effective_constraints(request)
        input_tokens = estimate_prompt_tokens(request.chat_messages())
        names = self.table.names
        with self._lock:
            post = self.posteriors[task]
            eligible = self._eligible[task].copy()
            unavailable = self.unavailable()
            if unavailable:
                eligible &= ~eligible_mask(names, sorted(unavailable))
            if strategy is not None:
                if strategy not in self.settings.strategies:
                    raise UnknownStrategyError(strategy, ["auto", *names])
                if strategy in unavailable:
                    raise NoStrategyAvailableError(
                        f"strategy {strategy!r} is unavailable (its circuit is open)")
            elif not eligible.any():
                raise NoStrategyAvailableError(
                    f"no strategy is available for task type {task!r} "
                    "(all circuits open or none configured)")
            t = self.temperatures[task]
            choice, greedy, probs = self.policy.decide_full(
                post, self.table, eligible, constraints, input_tokens, t, self.rng,
                self.propensity_rng if strategy is None and t > 0 else None)
            q_mean = post.quality_mean()
            lat_mean = post.latency_mean_ms() + np.asarray(self.table.extra_latency_ms)
            share = self.rollout_percent / 100.0
            roll = float(self.rng.random()) if share < 1.0 else 0.0
        policy_idx = choice.index
        # No probabilities: a forced strategy, or temperature 0 (greedy, so certain).
        p_policy = 1.0 if probs is None else float(probs[policy_idx])
        default = self.default_strategy
        if strategy is not None:
            idx, routed_by, propensity = names.index(strategy), "forced", 1.0
        elif self.dry_run:
            idx, routed_by, propensity = policy_idx, "shadow", p_policy
        elif roll >= share:
            idx, routed_by = names.index(default), "rollout_default"
            p_def = float(probs[idx]) if probs is not None else float(greedy == idx)
            propensity = mix_propensity(p_def, True, share)
        else:
            idx, routed_by = policy_idx, "policy"
            propensity = mix_propensity(p_policy, names[idx] == default, share) \
                if share < 1.0 else p_policy
        name = names[idx]
        st = self.settings.strategies[name]
        samples = tuple(
            StrategySample(strategy=n, quality=float(choice.quality[i]),
                           latency_p95_ms=float(choice.latency_p95_ms[i]),
                           cost_usd=float(choice.cost_usd[i]), feasible=bool(choice.feasible[i]))
            for i, n in enumerate(names) if eligible[i] or i == idx)
        return Decision(
            request_id=rid, task_type=task, strategy=name, model=st.model, mode=st.mode,
            predicted_quality=float(q_mean[idx]), predicted_latency_ms=float(lat_mean[idx]),
            predicted_cost_usd=float(choice.cost_usd[idx]), propensity=propensity,
            explored=routed_by in ("policy", "shadow") and policy_idx != greedy,
            constraint_relaxed=choice.relaxed and routed_by in ("policy", "shadow"),
            policy_version=self.policy_version, routed_by=routed_by,  # type: ignore[arg-type]
            policy_choice=names[policy_idx], constraints=constraints,
            client_id=request.client_id, input_tokens=input_tokens, samples=samples,
            created_at=self.clock())

    # -- executing -------------------------------------------------------------------------

    def _call_for(self, strategy: str, request: CompletionRequest) -> tuple[Provider, ProviderCall]:
        st = self.settings.strategies[strategy]
        model = self.settings.models[st.model]
        max_tokens = request.max_tokens
        if st.max_tokens is not None:
            max_tokens = min(max_tokens or st.max_tokens, st.max_tokens)
        meta = dict(request.metadata)
        labels = self.settings.task_types[request.task_type].labels
        if labels and "labels" not in meta:
            meta["labels"] = list(labels)
        call = ProviderCall(model=model.upstream_name or st.model,
                            messages=request.chat_messages(), max_tokens=max_tokens,
                            task_type=request.task_type, metadata=meta)
        return self.providers[model.provider], call

    def _cost(self, strategy: str, resp: ProviderResponse) -> float:
        return (self.settings.model_of(strategy).cost_usd(resp.input_tokens, resp.output_tokens)
                * self.settings.strategies[strategy].batch_discount)

    async def _upstream(self, provider: Provider, model: str, call: ProviderCall,
                        deadline: float | None) -> ProviderResponse:
        """One upstream call with retries; every attempt feeds the model's circuit breaker."""
        pc = self.settings.providers[self.settings.models[model].provider]

        async def attempt() -> ProviderResponse:
            try:
                resp = await provider.complete(call)
            except ProviderError as exc:
                self._record_health(model, exc)
                raise
            self._record_health(model, None)
            return resp

        def on_retry(exc: BaseException) -> None:
            self.counters["retries"] += 1

        return await call_with_retries(attempt, pc.retry, deadline=deadline, on_retry=on_retry)

    def _record_health(self, model: str, exc: ProviderError | None) -> None:
        """Feed an upstream attempt's result to the model's circuit breaker. A rejected
        request (e.g. too long for the context) is the request's fault, not the model's."""
        breaker = self.breaker(model)
        if exc is None:
            breaker.record_success()
            return
        if isinstance(exc, ProviderBadRequestError):
            return
        was_open = breaker.state == "open"
        breaker.record_failure()
        if not was_open and breaker.state == "open":
            self.counters["circuit_opened"] += 1
            log.warning("circuit opened for model %s (%s)", model, exc)

    async def _call(self, strategy: str, request: CompletionRequest, role: str,
                    deadline: float | None = None) -> tuple[ProviderResponse, CallRecord]:
        provider, call = self._call_for(strategy, request)
        st = self.settings.strategies[strategy]
        if st.mode == Mode.BATCH and st.batch is not None:
            key = (request.task_type, strategy)
            batcher = self._batchers.get(key)
            if batcher is None:
                # The batch call has no single request's deadline; provider timeouts bound it.
                batcher = self._batchers[key] = MicroBatcher(
                    lambda c: self._upstream(provider, st.model, c, None),
                    window_ms=st.batch.window_ms, max_batch=st.batch.max_batch,
                    simulated_wait=provider.virtual_time)
            resp = await batcher.submit(call)
        else:
            resp = await self._upstream(provider, st.model, call, deadline)
        rec = CallRecord(strategy=strategy, model=self.settings.strategies[strategy].model,
                         role=role, latency_ms=resp.latency_ms,  # type: ignore[arg-type]
                         input_tokens=resp.input_tokens, output_tokens=resp.output_tokens,
                         cost_usd=self._cost(strategy, resp))
        return resp, rec

    async def _score(self, request: CompletionRequest, strategy: str, resp: ProviderResponse,
                     rid: str, calls: list[CallRecord]) -> float | None:
        """Score a draft: the judge when one is configured (its call is part of the
        strategy's cost), else the evaluators, else the heuristics."""
        probe = Outcome(request_id=rid, strategy=strategy,
                        model=self.settings.strategies[strategy].model,
                        latency_ms=resp.latency_ms, text=resp.text,
                        finish_reason=resp.finish_reason)
        if self.settings.judge.strategy is not None:
            try:
                score, rec = await self._judge_call(request, probe, resp.extra)
                calls.append(rec)
                return self.calibrations[request.task_type].apply(score)
            except (ProviderError, JudgeError) as exc:
                self.counters["judge_failures"] += 1
                log.warning("judge failed on a verified draft (%s); using heuristics", exc)
        heuristic, others = self._automatic_rewards(request, probe, resp.extra)
        if others:
            return others[0].score
        return heuristic.score if heuristic is not None else None

    def _automatic_rewards(self, request: CompletionRequest, outcome: Outcome,
                           extra: dict[str, Any]) -> tuple[Reward | None, list[Reward]]:
        """The task type's heuristic score (the lowest opinion) and the configured
        evaluators' rewards (none for a failed answer)."""
        heuristic = heuristic_score(self.heuristics[request.task_type], request, outcome, extra)
        if outcome.error is not None:
            return heuristic, []
        others = [r for ev in self.evaluators
                  if ev.task_types is None or request.task_type in ev.task_types
                  if (r := ev.evaluate(request, outcome, extra)) is not None]
        return heuristic, others

    async def _judge_call(self, request: CompletionRequest, outcome: Outcome,
                          extra: dict[str, Any]) -> tuple[float, CallRecord]:
        """Grade one answer with the judge strategy. Raises JudgeError for a reply with no
        score; logs the call (and whether the judge graded its own model's answer)."""
        jname = self.settings.judge.strategy
        assert jname is not None
        jst = self.settings.strategies[jname]
        model = self.settings.models[jst.model]
        provider = self.providers[model.provider]
        extra_body = {"grammar": SCORE_GRAMMAR} if self.settings.judge.use_grammar else {}
        call = ProviderCall(
            model=model.upstream_name or jst.model, task_type="judge",
            max_tokens=JUDGE_MAX_TOKENS,
            temperature=0.0, extra_body=extra_body,
            messages=judge_messages(request.task_type, request.text(), outcome.text),
            metadata={"judged_quality": extra.get("simulated_quality")})
        self_graded = jst.model == outcome.model
        error: str | None = None
        score: int | None = None
        resp: ProviderResponse | None = None
        try:
            resp = await self._upstream(provider, jst.model, call, None)
            score = parse_score(resp.text)
        except (ProviderError, JudgeError) as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            cost = self._cost(jname, resp) if resp is not None else 0.0
            self.counters["judge_calls"] += 1
            self.counters["judge_cost_usd"] += cost
            self.counters["judge_self_graded"] += int(self_graded)
            self.log_store.record_judge_call({
                "request_id": outcome.request_id, "created_at": self.clock(),
                "strategy": jname, "model": jst.model,
                "score": score_to_unit(score) if score is not None else None,
                "raw_reply": resp.text[:500] if resp is not None else None,
                "cost_usd": cost, "latency_ms": resp.latency_ms if resp else 0.0,
                "error": error, "self_graded": int(self_graded),
                "answer_chars": len(outcome.text)})
        assert resp is not None and score is not None
        rec = CallRecord(strategy=jname, model=jst.model, role="judge",
                         latency_ms=resp.latency_ms, input_tokens=resp.input_tokens,
                         output_tokens=resp.output_tokens, cost_usd=cost)
        return score_to_unit(score), rec

    def _maybe_judge(self, request: CompletionRequest, outcome: Outcome,
                     extra: dict[str, Any]) -> None:
        """Queue a background judge job for a sampled share of answers."""
        if self.settings.judge.strategy is None or outcome.error is not None:
            return
        tt = self.settings.task_types[request.task_type]
        with self._lock:
            post = self.posteriors[request.task_type]
            std = float(post.quality_std()[post.index[outcome.strategy]])
            u = float(self.rng.random())
        p = self.judge_sampler.probability(tt.judge_sample_rate, std)
        if not self.judge_sampler.take(p, u):
            return

        async def job() -> None:
            try:
                score, _ = await self._judge_call(request, outcome, extra)
            except (ProviderError, JudgeError):
                self.counters["judge_failures"] += 1
                raise
            self.add_reward(Reward(
                request_id=outcome.request_id, source="judge", score=score,
                sampling_probability=p, task_type=request.task_type,
                strategy=outcome.strategy, created_at=self.clock()))

        self.judge_runner.submit(job)

    async def _execute(self, strategy: str, request: CompletionRequest, rid: str,
                       calls: list[CallRecord],
                       deadline: float | None) -> tuple[ProviderResponse, bool]:
        """Run one strategy; appends every call it made to ``calls`` (failed ones too, by
        the caller). Returns the final response and whether it escalated."""
        st = self.settings.strategies[strategy]
        if st.mode == Mode.VERIFIED:
            assert st.verified is not None
            draft, rec = await self._call(st.verified.draft, request, "draft", deadline)
            calls.append(rec)
            score = await self._score(request, st.verified.draft, draft, rid, calls)
            if score is not None and score >= st.verified.accept_score:
                return draft, False
            final, rec2 = await self._call(st.verified.escalate_to, request, "escalation",
                                           deadline)
            calls.append(rec2)
            return final, True
        resp, rec = await self._call(strategy, request, "answer", deadline)
        calls.append(rec)
        return resp, False

    def cost_upper_bound(self, decision: Decision, request: CompletionRequest) -> float:
        """The most the decided strategy can cost: input tokens + max_tokens (or the task
        type's max_output_tokens) at its prices; verified: draft + judge + escalation."""
        tt = self.settings.task_types[request.task_type]
        out = request.max_tokens or tt.max_output_tokens

        def one(name: str) -> float:
            st = self.settings.strategies[name]
            n_out = min(out, st.max_tokens) if st.max_tokens else out
            return (self.settings.model_of(name).cost_usd(decision.input_tokens, n_out)
                    * st.batch_discount)

        st = self.settings.strategies[decision.strategy]
        if st.verified is None:
            return one(decision.strategy)
        judge = 0.0
        if self.settings.judge.strategy:
            judge = self.settings.model_of(self.settings.judge.strategy).cost_usd(
                decision.input_tokens + out + JUDGE_PROMPT_TOKENS_BOUND, JUDGE_MAX_TOKENS)
        return one(st.verified.draft) + judge + one(st.verified.escalate_to)

    def default_cost(self, outcome: Outcome) -> float:
        """What an outcome's tokens would have cost on the default strategy's model."""
        return self.settings.model_of(self.default_strategy).cost_usd(
            outcome.input_tokens, outcome.output_tokens)

    def circuits_open(self) -> dict[str, float]:
        """Seconds each open circuit has been open, by "provider/model"."""
        return {f"{p}/{m}": b.open_for_s() for (p, m), b in self._breakers.items()
                if b.state != "closed"}

    def policy_settings(self) -> dict[str, Any]:
        """The live policy knobs (what GET /v1/policy shows)."""
        return {"version": self.policy_version, "rollout_percent": self.rollout_percent,
                "default_strategy": self.default_strategy, "freeze": self.frozen,
                "exploration": dict(self.temperatures)}

    def update_policy(self, actor: str, *, version: str | None = None,
                      rollout_percent: float | None = None,
                      default_strategy: str | None = None, freeze: bool | None = None,
                      exploration: Mapping[str, float] | None = None) -> dict[str, Any]:
        """Change the policy knobs; validated first, recorded (who, when, what) durably
        in the store before it returns. Returns the new settings."""
        if rollout_percent is not None and not 0.0 <= rollout_percent <= 100.0:
            raise InvalidRequestError("rollout_percent must be in [0, 100]",
                                      field="rollout_percent")
        if default_strategy is not None and default_strategy not in self.settings.strategies:
            raise UnknownStrategyError(default_strategy, list(self.settings.strategies),
                                       field="default_strategy")
        for task, t in (exploration or {}).items():
            if task not in self.settings.task_types:
                raise InvalidRequestError(
                    f"exploration: unknown task type {task!r}; valid: "
                    f"{', '.join(sorted(self.settings.task_types))}", field="exploration")
            if not (math.isfinite(t) and 0.0 <= t <= 100.0):
                raise InvalidRequestError(f"exploration.{task}: must be in [0, 100]",
                                          field="exploration")
        with self._lock:
            if version is not None:
                self.policy_version = version
            if rollout_percent is not None:
                self.rollout_percent = rollout_percent
            if default_strategy is not None:
                self.default_strategy = default_strategy
            if freeze is not None:
                self.frozen = freeze
            self.temperatures.update(exploration or {})
            new = self.policy_settings()
        self.log_store.record_policy_change(actor, new)
        return new

    def fallback_order(self, decision: Decision) -> list[str]:
        """Strategies to try after the chosen one: feasible by cost, then the rest by cost,
        never more than ``max_fallback_cost_ratio`` times the chosen one's predicted cost."""
        cap = decision.predicted_cost_usd * self.settings.policy.max_fallback_cost_ratio
        unavailable = self.unavailable()
        rest = [s for s in decision.samples if s.strategy != decision.strategy
                and s.strategy not in unavailable and s.cost_usd <= max(cap, 1e-12)]
        rest.sort(key=lambda s: (not s.feasible, s.cost_usd))
        return [s.strategy for s in rest]

    def _begin(self, req: CompletionRequest, strategy: str | None,
               decision: Decision | None = None
               ) -> tuple[CompletionRequest, Decision, _Execution]:
        """Decide (unless given), log the decision, and plan the candidates."""
        if decision is None:
            decision = self.decide(req, strategy=strategy)
        if not req.request_id:
            req = msgspec.structs.replace(req, request_id=decision.request_id)
        self.log_store.record_decision(decision, req)
        first = self.default_strategy if decision.routed_by == "shadow" else decision.strategy
        candidates = [first] + ([] if strategy is not None else
                                [s for s in self.fallback_order(decision) if s != first])
        max_ms = decision.constraints.max_latency_ms
        ex = _Execution(candidates=candidates, executed=first, chain=[first],
                        deadline=time.monotonic() + max_ms / 1000.0 if max_ms else None)
        return req, decision, ex

    def _failed(self, ex: _Execution, cand: str, exc: ProviderError) -> None:
        ex.last_exc = exc
        ex.error = f"{type(exc).__name__}: {exc}"
        ex.calls.append(CallRecord(strategy=cand, model=self.settings.strategies[cand].model,
                                   error=ex.error))

    def _finish(self, req: CompletionRequest, decision: Decision,
                ex: _Execution) -> CompletionResult:
        """Record the outcome, run the evaluators, queue the judge; raise if all failed."""
        outcome = self._outcome(decision, ex)
        rewards = self._learn(req, decision, ex, outcome)
        if ex.resp is None:
            assert ex.last_exc is not None
            raise ex.last_exc
        return CompletionResult(request_id=decision.request_id, text=ex.resp.text,
                                decision=decision, outcome=outcome, rewards=tuple(rewards))

    def _outcome(self, decision: Decision, ex: _Execution) -> Outcome:
        resp = ex.resp
        rid = decision.request_id
        wall_ms = (time.perf_counter() - ex.t0) * 1000.0
        ok_calls = [c for c in ex.calls if c.error is None]
        simulated = sum(c.latency_ms for c in ok_calls) if resp is not None else 0.0
        latency = max(simulated, wall_ms)  # simulated time when the world is simulated
        c = decision.constraints
        outcome = Outcome(
            request_id=rid, strategy=ex.executed,
            model=self.settings.strategies[ex.executed].model, latency_ms=latency,
            input_tokens=sum(cr.input_tokens for cr in ok_calls),
            output_tokens=resp.output_tokens if resp else 0,
            cost_usd=sum(cr.cost_usd for cr in ex.calls),
            cost_estimated=bool(resp and resp.usage_estimated),
            error=ex.error, fallback_used=len(ex.chain) > 1, fallback_chain=tuple(ex.chain),
            sla_met=resp is not None and (c.max_latency_ms is None or latency <= c.max_latency_ms),
            escalated=ex.escalated, calls=tuple(ex.calls), text=resp.text if resp else "",
            finish_reason=resp.finish_reason if resp else "error", created_at=self.clock())
        return outcome

    def _learn(self, req: CompletionRequest, decision: Decision, ex: _Execution,
               outcome: Outcome) -> list[Reward]:
        """Log the outcome, learn from it, score it, queue the judge, apply kept feedback."""
        resp = ex.resp
        rid = decision.request_id
        self.record_outcome(req.task_type, outcome)
        extra = resp.extra if resp is not None else {}
        heuristic, others = self._automatic_rewards(req, outcome, extra)
        found = [heuristic, *others] if heuristic is not None else others
        # A request this process just served has no rewards elsewhere (kept feedback is
        # applied below): start its fused state here rather than look the store up.
        self.fusion.start(rid)
        rewards = [self.add_reward(msgspec.structs.replace(
            r, created_at=self.clock(), task_type=req.task_type, strategy=ex.executed))
            for r in found]
        if resp is not None:
            self._maybe_judge(req, outcome, extra)
        pending = self._pending_feedback.pop(rid, None)
        if pending:
            rec = self.log_store.get_request(rid)
            assert rec is not None  # its decision was logged before it ran
            for _, rater, score in pending:
                rewards.append(self._apply_feedback(rec, score, rater))
            self.log_store.clear_pending_feedback(rid)
        if self.on_outcome is not None:
            self.on_outcome(req, decision, outcome)
        return rewards

    async def acomplete_then_learn(self, request: CompletionRequest, *,
                                   strategy: str | None = None,
                                   decision: Decision | None = None
                                   ) -> tuple[CompletionResult, Callable[[], list[Reward]]]:
        """Like ``acomplete``, but the logging and learning that follow an answer are
        returned as a callable (giving the rewards) for the caller to run after it has
        replied (the service does, so a response never waits for bookkeeping). The result
        has no rewards yet. A request that failed everywhere is learned from at once,
        then raised."""
        req, decision, ex = self._begin(request, strategy, decision)
        await self._run_candidates(req, decision, ex)
        outcome = self._outcome(decision, ex)
        if ex.resp is None:
            self._learn(req, decision, ex, outcome)
            assert ex.last_exc is not None
            raise ex.last_exc
        result = CompletionResult(request_id=decision.request_id, text=ex.resp.text,
                                  decision=decision, outcome=outcome)

        def learn() -> list[Reward]:
            return [] if self._closed else self._learn(req, decision, ex, outcome)

        return result, learn

    async def _run_candidates(self, req: CompletionRequest, decision: Decision,
                              ex: _Execution) -> None:
        for i, cand in enumerate(ex.candidates):
            if i > 0:
                ex.chain.append(cand)
                self.counters["fallbacks"] += 1
            try:
                ex.resp, ex.escalated = await self._execute(cand, req, decision.request_id,
                                                            ex.calls, ex.deadline)
                ex.executed, ex.error = cand, None
                return
            except ProviderError as exc:
                self._failed(ex, cand, exc)

    async def acomplete(self, prompt: str | None = None, *,
                        request: CompletionRequest | None = None,
                        strategy: str | None = None, decision: Decision | None = None,
                        **kwargs: Any) -> CompletionResult:
        """Route and run one request; returns the answer with its decision trace.

        ``decision``: one made beforehand with ``decide`` (e.g. to reserve its cost)."""
        req = request if request is not None else self.make_request(prompt, **kwargs)
        result, learn = await self.acomplete_then_learn(req, strategy=strategy,
                                                        decision=decision)
        return msgspec.structs.replace(result, rewards=tuple(learn()))

    async def astream(self, request: CompletionRequest, *, strategy: str | None = None,
                      decision: Decision | None = None
                      ) -> AsyncIterator[Decision | str | CompletionResult]:
        """Route and stream one request: yields the Decision, then text deltas, then the
        CompletionResult. Direct strategies on providers that stream are streamed; batch
        and verified strategies answer whole (one delta). Fallback happens only before the
        first delta; a stream cut after it raises ProviderStreamError (after the failed
        outcome is recorded), never a quiet success."""
        req, decision, ex = self._begin(request, strategy, decision)
        yield decision
        started = False
        for i, cand in enumerate(ex.candidates):
            if i > 0:
                ex.chain.append(cand)
                self.counters["fallbacks"] += 1
            st = self.settings.strategies[cand]
            provider, call = self._call_for(cand, req)
            streams = st.mode == Mode.DIRECT and hasattr(provider, "stream")
            try:
                if not streams:
                    ex.resp, ex.escalated = await self._execute(
                        cand, req, decision.request_id, ex.calls, ex.deadline)
                    ex.executed, ex.error = cand, None
                    started = True
                    yield ex.resp.text
                    break
                final: ProviderResponse | None = None
                async for chunk in provider.stream(call):  # type: ignore[attr-defined]
                    if chunk.final is not None:
                        final = chunk.final
                    elif chunk.delta:
                        started = True
                        yield chunk.delta
                assert final is not None
                self._record_health(st.model, None)
                ex.resp, ex.executed, ex.error = final, cand, None
                ex.calls.append(CallRecord(
                    strategy=cand, model=st.model, role="answer", latency_ms=final.latency_ms,
                    input_tokens=final.input_tokens, output_tokens=final.output_tokens,
                    cost_usd=self._cost(cand, final)))
                break
            except ProviderError as exc:
                if streams:
                    self._record_health(st.model, exc)
                self._failed(ex, cand, exc)
                if started:
                    ex.executed = cand
                    break  # text already went out: no silent switch to another model
        yield self._finish(req, decision, ex)

    def _run(self, coro: Any) -> Any:
        """Run a coroutine on this Conductor's private loop (the sync API)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            # A Conductor dropped without close() must not leak its loop.
            weakref.finalize(self, self._loop.close)
        return self._loop.run_until_complete(coro)

    def complete(self, prompt: str | None = None, **kwargs: Any) -> CompletionResult:
        """Sync twin of ``acomplete``. Do not call from inside a running event loop."""
        return self._run(self.acomplete(prompt, **kwargs))

    # -- learning --------------------------------------------------------------------------
    #
    # Each posterior update and its log row happen under one lock, so the store's event
    # order (seq) is the order the posterior saw: snapshot + later events rebuilds it exactly.

    def _apply_outcome(self, task_type: str, strategy: str, latency_ms: float | None,
                       output_tokens: int | None, escalated: bool | None,
                       error: str | None) -> None:
        st = self.settings.strategies[strategy]
        ok = error is None
        if latency_ms is not None and st.batch_window_ms:
            # The policy adds the batch window to its latency prediction; the posterior
            # models the rest, so take the window out of what was observed.
            latency_ms = max(1.0, latency_ms - st.batch_window_ms)
        self.posteriors[task_type].observe_outcome(
            strategy, latency_ms if ok else None, output_tokens if ok else None,
            escalated if st.mode == Mode.VERIFIED and ok else None, self.gamma)

    def record_outcome(self, task_type: str, outcome: Outcome) -> None:
        """Log an outcome and learn its latency, tokens and escalation."""
        with self._lock:
            self.log_store.record_outcome(outcome, task_type=task_type, applied=not self.frozen)
            if not self.frozen:
                self._apply_outcome(task_type, outcome.strategy, outcome.latency_ms,
                                    outcome.output_tokens, outcome.escalated, outcome.error)
            self._maybe_snapshot()

    def add_reward(self, reward: Reward, *, wait: bool | None = None) -> Reward:
        """Fuse a reward into its request's effective reward and correct the posterior by
        the change. Logged with its source, raw score and the effective score. User
        ratings are durable before this returns."""
        task, strategy = reward.task_type, reward.strategy
        known = task in self.posteriors.tasks and strategy in self.settings.strategies
        with self._lock:
            if self.fusion.get(reward.request_id) is None:
                rec = self.log_store.get_request(reward.request_id)
                if rec is not None and rec.rewards:
                    self.fusion.rebuild(reward.request_id, rec.rewards)
            before = self.fusion.get(reward.request_id)
            had_judge = before is not None and before.judge is not None
            had_user = before is not None and bool(before.users)
            old, new = self.fusion.update(reward)
            st = self.fusion.get(reward.request_id)
            assert st is not None
            if task in self.calibrations and st.judge is not None and st.users and (
                    not had_judge or not had_user):
                self.calibrations[task].add_pair(st.judge, sum(st.users.values()) / len(st.users))
            applied = known and not self.frozen and new is not None and new != old
            reward = msgspec.structs.replace(reward, effective_score=new)
            handle = self.log_store.record_reward(
                reward, applied=applied, previous_score=old if applied else None, wait=False)
            if applied:
                assert new is not None
                post = self.posteriors[task]
                if old is None:
                    post.observe_reward(strategy, new)
                else:
                    post.correct_reward(strategy, old, new)
                if self.on_reward is not None:
                    self.on_reward(task, new, old)
        if handle is not None and wait is not False:
            handle.result()  # durable before we acknowledge
        return reward

    def _apply_feedback(self, rec: RequestRecord, score: float, rater: str) -> Reward:
        assert rec.decision is not None
        strategy = rec.outcome.strategy if rec.outcome else rec.decision.strategy
        return self.add_reward(Reward(
            request_id=rec.request_id, source="user", score=score, rater=rater,
            task_type=rec.decision.task_type, strategy=strategy, created_at=self.clock()))

    def feedback(self, request_id: str, rating: float | int | bool | str, rater: str = "",
                 *, pending_ok: bool = False) -> Reward:
        """A user rating for a request; returns once it is committed to the store.

        Ratings: True/False or 'up'/'down' (thumbs), an int 1-5 (stars), a float in [0, 1].
        Re-rating by the same rater replaces the earlier score; several raters count as
        their mean, so a request weighs one observation however often it is rated.
        An unknown request id raises NotFoundError, unless ``pending_ok``: then the rating
        is kept (durably) and applied when the request lands (a client that rates a
        request before its completion was logged), and the returned reward has no
        ``effective_score``.
        """
        score = rating_to_score(rating)
        with self._feedback_lock:
            rec = self.log_store.get_request(request_id)
            if rec is not None and rec.decision is not None:
                return self._apply_feedback(rec, score, rater)
            if not pending_ok:
                raise NotFoundError(f"unknown request id {request_id!r}")
            now = self.clock()
            self.log_store.record_pending_feedback(request_id, score, rater, now)
            with self._lock:
                self._pending_feedback.setdefault(request_id, []).append((now, rater, score))
            return Reward(request_id=request_id, source="user", score=score, rater=rater,
                          created_at=now)

    async def afeedback(self, request_id: str, rating: float | int | bool | str,
                        rater: str = "", *, pending_ok: bool = False) -> Reward:
        return await asyncio.to_thread(self.feedback, request_id, rating, rater,
                                       pending_ok=pending_ok)

    # -- state -----------------------------------------------------------------------------

    def state(self) -> dict[str, Any]:
        with self._lock:
            return self.posteriors.to_dict()

    def load_state(self, data: Any) -> list[str]:
        """Load posterior state; returns what was repaired (never raises on bad numbers)."""
        with self._lock:
            return self.posteriors.load(data)

    def restore(self) -> list[str]:
        """Rebuild the posterior from the store: its last snapshot plus every event after it.

        Returns what had to be repaired. Unknown task types or strategies (the config
        changed) are skipped.
        """
        store = self.log_store
        problems: list[str] = []
        with self._lock:
            snap = store.latest_snapshot()
            seq = 0
            if snap is not None:
                seq, state = snap
                problems += self.posteriors.load(state)
            replayed = 0
            for kind, row in store.events_after(seq):
                task, strategy = row["task_type"], row["strategy"]
                if task not in self.posteriors.tasks or strategy not in self.settings.strategies:
                    continue
                if kind == "outcome":
                    self._apply_outcome(task, strategy, row["latency_ms"], row["output_tokens"],
                                        bool(row["escalated"]), row["error"])
                else:
                    new = row["effective_score"]
                    new = row["score"] if new is None else new
                    if row["previous_score"] is None:
                        self.posteriors[task].observe_reward(strategy, new)
                    else:
                        self.posteriors[task].correct_reward(strategy, row["previous_score"],
                                                             new)
                replayed += 1
            for task, judge, user in store.judge_user_pairs():
                if task in self.calibrations:
                    self.calibrations[task].add_pair(judge, user)
            for rid, created, rater, score in store.pending_feedback():
                self._pending_feedback.setdefault(rid, []).append((created, rater, score))
        for p in problems:
            log.warning("posterior state repaired: %s", p)
        log.info("posterior restored from snapshot at seq %d plus %d events", seq, replayed)
        return problems

    def _maybe_snapshot(self, force: bool = False) -> None:
        now = self.clock()
        if force or now - self._last_snapshot >= self.settings.storage.snapshot_every_s:
            self._last_snapshot = now
            self.log_store.save_snapshot(self.log_store.last_seq(), self.posteriors.to_dict(),
                                         wait=force)

    def snapshot(self) -> None:
        """Save the posterior now and wait until it is committed."""
        with self._lock:
            self._maybe_snapshot(force=True)

    def wait_for_judges(self, timeout: float = 30.0) -> bool:
        """Block until queued judge jobs have finished (tests, batch scripts)."""
        return self.judge_runner.wait_idle(timeout)

    def _close_judges(self) -> None:
        for p in self.providers.values():
            self.judge_runner.on_close(p.aclose)
        self.judge_runner.close()

    def close(self) -> None:
        """Finish judge jobs, snapshot the posterior, close providers, drain the store."""
        if self._closed:
            return
        self._closed = True
        self._close_judges()
        if self._loop is not None:
            for p in self.providers.values():
                self._loop.run_until_complete(p.aclose())
            self._loop.close()
            self._loop = None
        self.snapshot()
        self.log_store.close()

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._close_judges)
        for p in self.providers.values():
            await p.aclose()
        await asyncio.to_thread(self.snapshot)
        await asyncio.to_thread(self.log_store.close)

    def __enter__(self) -> Conductor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

