"""Conductor: a thin lifecycle, decide -> admit -> execute -> record -> learn.

The policy (``bandit``) decides; ``execution`` runs the strategy against the providers;
``evaluators`` turn the answer into rewards; ``learning`` applies what was observed; the
log store records it all. The router ties them together and owns nothing else: no web
framework, no database driver.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncGenerator, Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from conductor.bandit.priors import Coefficients, build_priors
from conductor.coefficients import configured_priors
from conductor.config import Settings, default_settings, load_settings
from conductor.deciding import Decider, make_request
from conductor.errors import StorageError
from conductor.evaluators.base import Evaluator, SimulatedQualityEvaluator
from conductor.evaluators.judge import Judge
from conductor.evaluators.pipeline import Evaluation
from conductor.execution import Attempt, Executor, Health, Plan, Upstream, build_modes
from conductor.learning import (
    Bookkeeper,
    Follower,
    Learner,
    quality_intervals,
    quality_summary,
    rating_to_score,
)
from conductor.lifecycle import Admission, InFlight
from conductor.metrics import RouterListener, RouterStats
from conductor.probing import Prober
from conductor.providers.base import Provider
from conductor.providers.registry import open_providers
from conductor.providers.reliability import CircuitBreaker
from conductor.rate_limiter import RateLimiter, Reservation
from conductor.storage.base import LogStore
from conductor.storage.stores import open_store
from conductor.types import (
    CompletionRequest,
    CompletionResult,
    Decision,
    Outcome,
    PolicyKnobs,
    Reward,
)

log = logging.getLogger("conductor.router")
FEEDBACK_WAIT_S = 5.0  # how long a rating waits for a request it raced
MAX_LEARNING_BACKLOG = 1000  # answered requests waiting to be logged and learned from


class Conductor:
    """The router. ``Conductor()`` runs the built-in demo world end to end.

    Args:
        config: Settings, a TOML path, or None for the built-in default.
        coefficients: fitted priors (``load_coefficients``; default: ``[policy] priors``).
        policy_version: overrides ``policy.version``; recorded with every decision.
        log_store: where decisions, outcomes and rewards go: a store, a SQLite file path
            (``"conductor.db"``), ``"config"`` for the config's ``[storage] path``, or None
            (the default) for memory only: nothing written to disk unless asked.
        dry_run: shadow mode: decide and log, but always execute the default strategy.
        providers: provider instances by config name (default: opened by kind).
        evaluators: extra reward sources run on every answer (default: the simulated
            signal a simulated provider attaches). Heuristics and the judge always run.
        limiter: admission per client (default: the config's ``[clients]`` limits).
        seed: seeds the policy's random generator (default: ``policy.seed`` or entropy).
        clock: wall-clock seconds, injectable for tests.
    """

    def __init__(self, config: Settings | str | Path | None = None, *,
                 coefficients: Coefficients | None = None, policy_version: str | None = None,
                 log_store: LogStore | str | Path | None = None, dry_run: bool = False,
                 providers: Mapping[str, Provider] | None = None,
                 evaluators: Sequence[Evaluator] | None = None,
                 limiter: RateLimiter | None = None, seed: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        settings = config if isinstance(config, Settings) else (
            default_settings() if config is None else load_settings(config))
        self.settings = settings
        self.log_store: LogStore = open_store(log_store, settings)
        self.dry_run = dry_run
        self.clock = clock
        fitted, warm = configured_priors(settings)
        priors = build_priors(settings, fitted if coefficients is None else coefficients)
        self.learner = Learner(settings, priors, self.log_store, clock=clock, warm=warm)
        self.health = Health(settings)
        self.upstream = Upstream(settings, providers if providers is not None
                                 else open_providers(settings), self.health)
        self.evaluation = Evaluation(
            settings, [SimulatedQualityEvaluator()] if evaluators is None else evaluators,
            Judge.from_settings(settings, self.upstream.complete, self.upstream.cost),
            record_call=self.log_store.record_judge_call, calibrate=self.learner.calibrated,
            clock=clock)
        self.executor = Executor(settings, build_modes(settings, self.upstream,
                                                       self.evaluation.score_draft), self.health)
        self.prober = Prober(settings, self.executor, self.evaluation, self.learner,
                             self.log_store, clock=clock)
        self._switched_off: set[str] = set()
        self._flights = InFlight()
        self._listeners: list[RouterListener] = []
        self.admission = Admission(settings, limiter or RateLimiter.for_clients(
            settings.clients, self.log_store.limit_ledger()), self._listeners)
        self.decider = Decider(settings, self.learner, self.unavailable,
                               seed=seed if seed is not None else settings.policy.seed,
                               dry_run=dry_run, clock=clock)
        self.learner.reward_listeners.append(self._notify_reward)
        self.learner.restore()
        if policy_version is not None:
            self.learner.knobs = msgspec.structs.replace(self.learner.knobs,
                                                         version=policy_version)
        self.books = Bookkeeper()
        every = settings.storage.follow_every_s
        self.follower = Follower(self.learner, every) if (
            self.log_store.shared and every > 0) else None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def add_listener(self, listener: RouterListener) -> None:
        self._listeners.append(listener)

    def _notify_reward(self, task_type: str, new: float, old: float | None) -> None:
        for listener in self._listeners:
            listener.on_reward(task_type, new, old)

    @property
    def posteriors(self) -> Any:
        return self.learner.posteriors

    # -- deciding --------------------------------------------------------------------------

    def make_request(self, prompt: str | None = None, **kwargs: Any) -> CompletionRequest:
        """Build a validated CompletionRequest from keyword arguments (``messages``,
        ``task_type``, ``max_latency_ms``, ``min_quality``, ``max_cost_usd``, ``client_id``,
        ``request_id``, ``max_tokens``, ``metadata``, ``params``: sampling and output
        parameters such as ``{"temperature": 0, "response_format": {...}}``)."""
        return make_request(prompt, **kwargs)

    def set_available(self, strategy: str, available: bool) -> None:
        """Switch a strategy off (or back on) by hand; open circuits do this on their own."""
        (self._switched_off.discard if available else self._switched_off.add)(strategy)

    def unavailable(self) -> set[str]:
        """Strategies the policy must skip: switched off, or a model's circuit is open."""
        return self._switched_off | self.health.unavailable()

    def breaker(self, model: str) -> CircuitBreaker:
        return self.health.breaker(model)

    def predict_only(self, request: CompletionRequest | None = None, /, **kwargs: Any) -> Decision:
        """Decide (with the propensity), call nothing, log nothing. Takes a
        CompletionRequest or ``make_request`` keywords."""
        req = request if request is not None else self.make_request(**kwargs)
        return self.decider.with_propensity(*self.decider.decide(req))

    async def apredict_only(self, request: CompletionRequest | None = None, /,
                            **kwargs: Any) -> Decision:
        return self.predict_only(request, **kwargs)

    def decide(self, request: CompletionRequest, *, strategy: str | None = None) -> Decision:
        """The policy's decision for a request (or a forced ``strategy``), with its
        propensity (computed now; on the request path it is computed after the answer)."""
        return self.decider.with_propensity(*self.decider.decide(request, strategy))

    # -- cost ------------------------------------------------------------------------------

    def cost_upper_bound(self, strategy: str, request: CompletionRequest) -> float:
        """The most ``strategy`` can cost for ``request`` (what admission reserves)."""
        return self.admission.cost_upper_bound(strategy, request)

    def default_cost(self, outcome: Outcome) -> float:
        """What an outcome's tokens would have cost on the default strategy's model."""
        return self.settings.model_of(self.learner.knobs.default_strategy).cost_usd(
            outcome.input_tokens, outcome.output_tokens)

    # -- executing -------------------------------------------------------------------------

    async def _begin(self, request: CompletionRequest, strategy: str | None
                     ) -> tuple[CompletionRequest, Decision, Plan, Reservation]:
        """Decide, admit, and plan the candidates (a client's own request id held first)."""
        async with self._flights.held(request.request_id, self.log_store.get_request):
            decision, pending = self.decider.decide(request, strategy)
            first = (self.learner.knobs.default_strategy if decision.routed_by == "shadow"
                     else decision.strategy)
            reservation = await self.admission.admit(request, first)
        if not request.request_id:
            request = msgspec.structs.replace(request, request_id=decision.request_id)
        self._flights.begin(decision.request_id, pending)
        max_ms = decision.constraints.max_latency_ms
        plan = Plan(request_id=decision.request_id, candidates=(first,),
                    fallbacks=None if strategy is not None else lambda: [
                        s for s in self.decider.fallback_order(decision) if s != first],
                    deadline=time.monotonic() + max_ms / 1000.0 if max_ms else None,
                    before_fallback=partial(self.admission.rebase, request, reservation))
        return request, decision, plan, reservation

    def _learn(self, req: CompletionRequest, decision: Decision, outcome: Outcome,
               extra: dict[str, Any]) -> tuple[Decision, list[Reward]]:
        """Log the decision (with its propensity) and the outcome, learn from them, score
        the answer, queue the judge, apply feedback that arrived while it ran."""
        rid = decision.request_id
        decision = self.decider.with_propensity(decision, self._flights.pending(rid))
        self.log_store.record_decision(decision, req)
        self.learner.record_outcome(req.task_type, outcome)
        # A request this process just served has no rewards elsewhere (kept feedback is
        # applied below): start its fused state here rather than look the store up.
        self.learner.fusion.start(rid, decision.features)
        rewards = [self.learner.add_reward(r) if learned else self.learner.record_only(r)
                   for r, learned in self.evaluation.automatic_rewards(req, outcome, extra)]
        if outcome.error is None:
            post = self.learner.posteriors[req.task_type]
            std = float(post.quality_std()[post.index[outcome.strategy]])
            self.evaluation.maybe_judge(req, outcome, std, float(self.decider.rng.random()),
                                        self.learner.add_reward)
            self.prober.submit(req, decision)
        pending = self.learner.take_pending(rid)
        for _, rater, score in pending:
            rewards.append(self.learner.user_reward(decision, outcome.strategy, score, rater))
        if pending:
            self.log_store.clear_pending_feedback(rid)
        self._flights.landed(rid)
        for listener in self._listeners:
            listener.on_outcome(req, decision, outcome)
        return decision, rewards

    async def acomplete_then_learn(self, request: CompletionRequest, *,
                                   strategy: str | None = None
                                   ) -> tuple[CompletionResult, Callable[[], CompletionResult]]:
        """Decide, admit, execute. Logging and learning are returned as a callable (giving
        the final result, with the propensity and rewards) for the caller to run after it
        has replied: the service does, so an answer never waits for bookkeeping. A request
        that failed everywhere is learned from at once, then raised."""
        req, decision, plan, reservation = await self._begin(request, strategy)
        try:
            attempt = await self.executor.run(req, plan)
        except BaseException:  # cancelled: the reservation stays, as an upper bound
            self._flights.landed(decision.request_id)
            raise
        outcome = attempt.outcome(decision, self.settings, self.clock())
        extra = attempt.resp.extra if attempt.resp is not None else {}
        if attempt.resp is None:
            await self.admission.settle(reservation, outcome.cost_usd)
            self._learn(req, decision, outcome, extra)
            raise attempt.failure
        result = CompletionResult(request_id=decision.request_id, text=attempt.resp.text,
                                  decision=decision, outcome=outcome)

        def learn() -> CompletionResult:
            """Off the answer's path (the bookkeeping thread, for the service)."""
            if self._closed:
                self._flights.landed(decision.request_id)
                return result
            self.admission.settle_here(reservation, outcome.cost_usd)
            final, rewards = self._learn(req, decision, outcome, extra)
            return msgspec.structs.replace(result, decision=final, rewards=tuple(rewards))

        return result, learn

    async def acomplete_later(self, request: CompletionRequest, *,
                              strategy: str | None = None) -> CompletionResult:
        """Decide, admit, execute; logging and learning are queued for the bookkeeping
        thread, so the caller can answer at once (the result has no rewards, and its
        decision no propensity yet: the log gets both). ``wait_for_learning`` drains."""
        result, learn = await self.acomplete_then_learn(request, strategy=strategy)
        if self.books.backlog < MAX_LEARNING_BACKLOG:
            self.books.submit(learn)
        else:  # learning is behind: do it now, which slows answers down (backpressure)
            learn()
        return result

    def wait_for_learning(self, timeout: float = 30.0) -> bool:
        """Block until queued logging and learning have run (tests, batch scripts)."""
        return self.books.wait_idle(timeout)

    async def acomplete(self, prompt: str | None = None, *,
                        request: CompletionRequest | None = None,
                        strategy: str | None = None, **kwargs: Any) -> CompletionResult:
        """Route and run one request; returns the answer with its decision trace."""
        req = request if request is not None else self.make_request(prompt, **kwargs)
        _, learn = await self.acomplete_then_learn(req, strategy=strategy)
        return learn()

    async def astream(self, request: CompletionRequest, *, strategy: str | None = None
                      ) -> AsyncGenerator[Decision | str | CompletionResult, None]:
        """Route and stream one request: yields the Decision (after admission), then text
        deltas, then the CompletionResult. Direct strategies stream; the others answer in
        one delta. Fallback happens only before the first delta; a stream cut after it
        raises ProviderStreamError (after the failed outcome is recorded)."""
        req, decision, plan, reservation = await self._begin(request, strategy)
        attempt: Attempt | None = None
        try:
            yield decision
            async for item in self.executor.stream(req, plan):
                if isinstance(item, str):
                    yield item
                else:
                    attempt = item
        finally:
            if attempt is None:  # abandoned: the reservation stays, as an upper bound
                self._flights.landed(decision.request_id)
        assert attempt is not None
        outcome = attempt.outcome(decision, self.settings, self.clock())
        await self.admission.settle(reservation, outcome.cost_usd)
        final, rewards = self._learn(req, decision, outcome,
                                     attempt.resp.extra if attempt.resp else {})
        if attempt.resp is None:
            raise attempt.failure
        yield CompletionResult(request_id=decision.request_id, text=attempt.resp.text,
                               decision=final, outcome=outcome, rewards=tuple(rewards))

    def _run(self, coro: Any) -> Any:
        """Run a coroutine on this Conductor's private loop (the sync API)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            weakref.finalize(self, self._loop.close)  # dropped without close(): no leak
        return self._loop.run_until_complete(coro)

    def complete(self, prompt: str | None = None, **kwargs: Any) -> CompletionResult:
        """Sync twin of ``acomplete``. Do not call from inside a running event loop."""
        return self._run(self.acomplete(prompt, **kwargs))

    # -- feedback and policy -----------------------------------------------------------------

    def feedback(self, request_id: str, rating: bool | str | None = None, rater: str = "",
                 *, stars: float | None = None, thumbs: bool | str | None = None,
                 score: float | None = None, pending_ok: bool = False) -> Reward:
        """A user rating for a request; returns once it is committed to the store.

        One scale, named: ``stars=1..5``, ``thumbs=True/False`` (or 'up'/'down'),
        ``score=0..1``; ``rating`` takes a bool or 'up'/'down' only (a bare number is
        ambiguous and raises InvalidRequestError).
        Re-rating by the same rater replaces the earlier score; several raters count as
        their mean, so a request weighs one observation however often it is rated.
        A rating racing its request waits up to ``FEEDBACK_WAIT_S`` for it to land, then is
        kept until it does (the returned reward has no ``effective_score``); so is an
        unknown id with ``pending_ok``. Otherwise an unknown id raises NotFoundError.
        """
        value = rating_to_score(rating, stars=stars, thumbs=thumbs, score=score)
        # Answered, being logged: wait a moment for it to land.
        in_flight = self._flights.wait(request_id, FEEDBACK_WAIT_S)
        return self.learner.feedback(request_id, value, rater, in_flight=in_flight,
                                     pending_ok=pending_ok)

    async def afeedback(self, request_id: str, rating: bool | str | None = None,
                        rater: str = "", *, stars: float | None = None,
                        thumbs: bool | str | None = None, score: float | None = None,
                        pending_ok: bool = False) -> Reward:
        return await asyncio.to_thread(partial(
            self.feedback, request_id, rating, rater, stars=stars, thumbs=thumbs,
            score=score, pending_ok=pending_ok))

    def target_of(self, task_type: str) -> float | None:
        """The task type's quality target as it stands (a relative one: the ratio times
        the reference's posterior mean); None without one. Decisions steer by a cautious
        version of it (see ``PolicyConfig.target_reference_z``), moved by the controller."""
        return self.decider.point_target(task_type)

    def policy_settings(self) -> PolicyKnobs:
        """The live policy knobs (what GET /v1/policy shows)."""
        return self.learner.knobs

    def update_policy(self, actor: str, **changes: Any) -> PolicyKnobs:
        """Change the policy knobs (see ``Learner.update_policy``); durable on return."""
        return self.learner.update_policy(actor, **changes)

    # -- state and introspection -------------------------------------------------------------

    def stats(self) -> RouterStats:
        return RouterStats.of(self.health, self.evaluation, self.learner.calibrations,
                              self.learner.scale_report(), self.prober.counters)

    def posterior_summary(self) -> dict[str, dict[str, tuple[float, float]]]:
        return quality_summary(self.learner)

    def quality_intervals(self, level: float = 0.95) -> dict[str, dict[str, dict[str, float]]]:
        """Per task type and strategy: mean quality, its ``level`` interval, rewards."""
        return quality_intervals(self.learner, level)

    def state(self) -> dict[str, Any]:
        return self.learner.state()

    def load_state(self, data: Any) -> list[str]:
        """Load learned state; returns what was repaired (never raises on bad numbers)."""
        return self.learner.load_state(data)

    def snapshot(self) -> None:
        """Save the learned state now and wait until it is committed."""
        self.learner.snapshot()

    def wait_for_judges(self, timeout: float = 30.0) -> bool:
        """Block until queued judge jobs have finished (tests, batch scripts)."""
        return self.evaluation.wait_idle(timeout)

    def _close_judges(self) -> None:
        for p in self.upstream.providers.values():
            self.evaluation.runner.on_close(p.aclose)
        self.evaluation.runner.close()

    def close(self) -> None:
        """Finish judge jobs, snapshot, close providers, drain the store."""
        if self._closed:
            return
        self.books.close()
        self._closed = True
        self._close_judges()
        if self._loop is not None:
            for p in self.upstream.providers.values():
                self._loop.run_until_complete(p.aclose())
            self._loop.close()
            self._loop = None
        self._snapshot_then_close_store()

    def _snapshot_then_close_store(self) -> None:
        if self.follower is not None:
            self.follower.close()
        try:  # a full disk must not keep the store open
            self.snapshot()
        except StorageError as exc:
            log.error("final snapshot not saved: %s", exc)
        self.log_store.close()

    async def aclose(self) -> None:
        if self._closed:
            return
        await asyncio.to_thread(self.books.close)
        self._closed = True
        await asyncio.to_thread(self._close_judges)
        for p in self.upstream.providers.values():
            await p.aclose()
        await asyncio.to_thread(self._snapshot_then_close_store)

    def __enter__(self) -> Conductor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
