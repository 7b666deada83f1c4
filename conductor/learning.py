"""What Conductor has learned, and the one place it changes: ``Learner.apply(event)``.

Posteriors per (task type, strategy), reward fusion, the judge's calibration against user
labels, feedback waiting for its request, and the live policy knobs. Every change is an event
(``OutcomeEvent | RewardEvent | PolicyEvent``) applied under one lock, together with the
log row that records it, so the store's event order is the order the posterior saw:
restart = the last snapshot + the events after it, through the same ``apply``.

A judge's scores are learned as scored and kept apart from other rewards (in the
posteriors, the targets' sums and the per-prompt models); what they are worth is read
through the judge's error rates per task type (``JudgeErrorRates``, learned from requests
that have both a judge's score and a user's label), so a move of the rates re-corrects
every judged reward already learned, and the state does not depend on whether a label
arrived before or after the scores it corrects. With no labels the judge's own scale is
used, and ``/v1/stats`` says so. (The per-answer map ``JudgeCalibration``, E[user |
judge], stays for decisions about one answer: a verified strategy's draft.)
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol

import msgspec
import numpy as np

from conductor.bandit.context import ContextModel
from conductor.bandit.posterior import JudgeScale, PosteriorState, TaskPosterior
from conductor.bandit.priors import Coefficients
from conductor.bandit.targets import TargetState
from conductor.coefficients import ContextPriors, start_contexts
from conductor.config import Settings
from conductor.errors import InvalidRequestError, NotFoundError
from conductor.evaluators.calibration import JudgeCalibration, JudgeErrorRates
from conductor.evaluators.fusion import RewardFusion
from conductor.storage.base import LogMark, LogStore
from conductor.types import (
    Decision,
    LearningEvent,
    Outcome,
    OutcomeEvent,
    PolicyEvent,
    PolicyKnobs,
    Reward,
    RewardEvent,
)

log = logging.getLogger("conductor.learning")

SNAPSHOT_VERSION = 2
_NEVER = 2**62  # a seq beyond any: "none of this origin's events"


class RewardListener(Protocol):
    def __call__(self, task_type: str, new: float, old: float | None) -> None: ...


_HOW = ('send one of "stars" (1-5), "score" (0 to 1) or "thumbs" (true/false, "up"/"down")')
_UP, _DOWN = ("up", "thumbs_up", "+1", "good"), ("down", "thumbs_down", "-1", "bad")


def rating_to_score(rating: bool | str | float | None = None, *, stars: float | None = None,
                    thumbs: bool | str | None = None, score: float | None = None) -> float:
    """A user rating on an explicit scale, as a score in [0, 1]: ``stars`` 1-5 (-> 0, .25,
    ... 1), ``thumbs`` (True/False or 'up'/'down' -> 1 or 0) or ``score`` (0 to 1, as is).
    Exactly one. ``rating`` takes only what cannot be misread (a bool, 'up' or 'down'): a
    bare number is refused, since 1 means one star to some senders and a perfect score to
    others (JSON encoders write 1.0 as 1)."""
    given = [k for k, v in (("rating", rating), ("stars", stars), ("thumbs", thumbs),
                            ("score", score)) if v is not None]
    if len(given) != 1:
        raise InvalidRequestError(
            f"a rating needs exactly one scale, got {', '.join(given) or 'none'}: {_HOW}",
            field="rating")
    if rating is not None:
        if isinstance(rating, bool | str):
            thumbs = rating
        else:
            raise InvalidRequestError(
                f"rating {rating!r} is ambiguous (one star or a perfect score?): {_HOW}",
                field="rating")
    if thumbs is not None:
        if isinstance(thumbs, bool):
            return 1.0 if thumbs else 0.0
        if isinstance(thumbs, str) and thumbs.strip().lower() in _UP + _DOWN:
            return 1.0 if thumbs.strip().lower() in _UP else 0.0
        raise InvalidRequestError(f"thumbs {thumbs!r}: expected true/false or 'up'/'down'",
                                  field="thumbs")
    if stars is not None:
        if isinstance(stars, bool) or not (isinstance(stars, int | float) and
                                           float(stars).is_integer() and 1 <= stars <= 5):
            raise InvalidRequestError(f"stars {stars!r}: a whole number from 1 to 5",
                                      field="stars")
        return (float(stars) - 1.0) / 4.0
    assert score is not None
    if isinstance(score, bool) or not (isinstance(score, int | float) and math.isfinite(score)
                                       and 0.0 <= score <= 1.0):
        raise InvalidRequestError(f"score {score!r}: a number from 0 to 1", field="score")
    return float(score)


def scale_of(rates: JudgeErrorRates | None) -> JudgeScale | None:
    """How judged rewards are read given a judge's measured error rates: through them
    once they are known from enough user labels, as scored before (None)."""
    if rates is None or not rates.active:
        return None
    fp, _ = rates.rates()
    return JudgeScale(fp=fp, informativeness=rates.informativeness())


def learn_first_reward(post: TaskPosterior, target: TargetState, context: ContextModel | None,
                       strategy: str, value: float, *, judged: bool, gamma: float,
                       target_gamma: float, z: np.ndarray | None = None,
                       served: bool = True) -> None:
    """A request's first reward into a task type's posterior, its target's sums and (with
    the prompt's features ``z``) its per-prompt model, which scores it against the task
    level before either learns it; a judge's score is kept apart in each. A probe's
    (``served`` False) teaches quality but is no part of the traffic the target measures.
    The Learner, the replay's policy and ``compare``'s candidates all learn through here."""
    if context is not None and z is not None:
        context.observe(strategy, z, value, gamma,
                        baseline=float(post.quality_mean()[post.index[strategy]]),
                        judged=judged)
    if judged:
        post.observe_judged(strategy, value)
    else:
        post.observe_reward(strategy, value)
    if served:
        target.observe(value, target_gamma, judged=strategy if judged else None,
                       scale=post.scale_of(strategy))


def correct_reward(post: TaskPosterior, target: TargetState, context: ContextModel | None,
                   strategy: str, old: float, new: float, *, was_judged: bool, judged: bool,
                   z: np.ndarray | None = None, served: bool = True) -> None:
    """A request's reward changed from ``old`` to ``new`` (a better source arrived): the
    per-prompt model (with the prompt's features ``z``) rescored against the task level
    and corrected, then the posterior and, for an answer served, the target's sums, each
    by the difference. The Learner and the replay's policy correct through here."""
    if context is not None and z is not None:
        context.correct(strategy, z, old, new,
                        baseline=float(post.quality_mean()[post.index[strategy]]),
                        was_judged=was_judged, judged=judged)
    post.correct_reward(strategy, old, new, was_judged=was_judged, judged=judged)
    if served:
        target.correct(old, new, strategy=strategy, was_judged=was_judged, judged=judged,
                       scale=post.scale_of(strategy))


def read_judged_through(scales: JudgeScale | Sequence[JudgeScale | None] | None,
                        post: TaskPosterior, target: TargetState,
                        context: ContextModel | None) -> None:
    """Read a task type's judged rewards through ``scales`` from now on: in its
    posterior, its per-prompt model and its target's sums (recounted)."""
    post.set_judge_scale(scales)
    if context is not None:
        context.set_scale(scales)
    for strategy in target.judged:
        if strategy in post.index:
            target.recount(strategy, post.scale_of(strategy))


class JudgeRates:
    """The judge's error rates per task type, measured on requests that also have a
    user's label: over all answers (pooled over task types as the prior), and apart on
    the judge's own model's answers and on the others' (a judge may favour its own
    model). ``scales`` says how each strategy's judged rewards are read. The router's
    Learner and the offline tools (``calibrate``, ``compare``) use the same rule."""

    def __init__(self, settings: Settings) -> None:
        min_pairs = settings.judge.min_calibration_pairs
        pooled = JudgeErrorRates(min_pairs=min_pairs)
        self.all = {t: JudgeErrorRates(min_pairs=min_pairs, pooled=pooled)
                    for t in settings.task_types}
        self.own = {t: JudgeErrorRates(min_pairs=min_pairs) for t in settings.task_types}
        self.other = {t: JudgeErrorRates(min_pairs=min_pairs) for t in settings.task_types}
        judge = settings.strategies.get(settings.judge.strategy or "")
        self.judge_model = judge.model if judge is not None else None
        self.models = {name: st.model for name, st in settings.strategies.items()}

    def add(self, task_type: str, strategy: str, judge: float, user: float) -> None:
        """One request with both a judge's score and a user's label."""
        if task_type in self.all:
            self.all[task_type].add(judge, user)
            kind = self.own if self.self_graded(strategy) else self.other
            kind[task_type].add(judge, user)

    def self_graded(self, strategy: str) -> bool:
        """Whether the judge grades its own model's answers when it grades ``strategy``."""
        return self.judge_model is not None and self.models.get(strategy) == self.judge_model

    def self_preference(self, task_type: str) -> bool:
        """Whether the judge errs differently on its own model's answers: both kinds
        measured, and their 90% intervals of the false-positive or of the false-negative
        rate apart."""
        own, other = self.own[task_type], self.other[task_type]
        if not (own.active and other.active):
            return False
        (afp, afn), (bfp, bfn) = own.intervals(), other.intervals()
        return any(a[1] < b[0] or b[1] < a[0] for a, b in ((afp, bfp), (afn, bfn)))

    def scale(self, task_type: str) -> JudgeScale | None:
        """The task type's scale over all answers (None: as scored)."""
        return scale_of(self.all.get(task_type))

    def scales(self, task_type: str, strategies: Sequence[str]
               ) -> tuple[JudgeScale | None, ...]:
        """Per strategy, how its judged rewards are read: the task type's scale, or,
        where a self-preference shows, the rates on its own model's answers for the
        judge's model's strategies and on the others' for the rest."""
        if not self.self_preference(task_type):
            return (self.scale(task_type),) * len(strategies)
        own, other = scale_of(self.own[task_type]), scale_of(self.other[task_type])
        return tuple(own if self.self_graded(s) else other for s in strategies)

    def report(self, task_type: str) -> dict[str, Any]:
        """The scale a task type's quality is learned on, the rates and the labels behind
        them (and, once the judge has graded its own model's answers, each kind's)."""
        rates, scale = self.all[task_type], self.scale(task_type)
        fp, fn = rates.rates() if scale is not None else (None, None)
        out: dict[str, Any] = {
            "scale": "calibrated" if scale is not None else "judge",
            "user_labels": rates.pairs, "labels_needed": rates.min_pairs,
            "judge_false_positive": fp, "judge_false_negative": fn}
        if self.own[task_type].pairs:
            def kind(r: JudgeErrorRates) -> dict[str, Any]:
                fp, fn = r.rates() if r.pairs else (None, None)
                return {"user_labels": r.pairs, "false_positive": fp, "false_negative": fn}

            out["self_preference"] = {
                "judge_model": self.judge_model, "shows": self.self_preference(task_type),
                "own_model": kind(self.own[task_type]),
                "other_models": kind(self.other[task_type])}
        return out


def configured_knobs(settings: Settings) -> PolicyKnobs:
    """The policy knobs as the configuration sets them."""
    p = settings.policy
    return PolicyKnobs(version=p.version, rollout_percent=p.rollout_percent,
                       default_strategy=p.default_strategy, freeze=p.freeze,
                       exploration={t: settings.temperature(t) for t in settings.task_types})


def check_knob_changes(settings: Settings, rollout_percent: float | None,
                       default_strategy: str | None,
                       exploration: dict[str, float] | None) -> None:
    """Raise InvalidRequestError (naming the field) for a policy change that cannot apply."""
    if rollout_percent is not None and not (
            math.isfinite(rollout_percent) and 0.0 <= rollout_percent <= 100.0):
        raise InvalidRequestError("rollout_percent must be in [0, 100]",
                                  field="rollout_percent")
    if default_strategy is not None and default_strategy not in settings.strategies:
        # A bad field of a valid request (400), not a missing resource (404).
        raise InvalidRequestError(
            f"default_strategy: unknown strategy {default_strategy!r}; valid: "
            f"{', '.join(settings.strategies)}", field="default_strategy")
    for task, t in (exploration or {}).items():
        if task not in settings.task_types:
            raise InvalidRequestError(
                f"exploration: unknown task type {task!r}; valid: "
                f"{', '.join(sorted(settings.task_types))}", field="exploration")
        if not (math.isfinite(t) and 0.0 <= t <= 100.0):
            raise InvalidRequestError(f"exploration.{task}: must be in [0, 100]",
                                      field="exploration")


def load_targets(targets: dict[str, TargetState], data: Any, settings: Settings) -> list[str]:
    """The saved targets' sums into ``targets`` (configured task types only); what was
    unreadable or impossible is reset and said."""
    problems: list[str] = []
    saved = data.get("targets") if isinstance(data, dict) else None
    if not isinstance(saved, dict):
        return problems
    for task, raw in saved.items():
        if task not in targets:
            continue
        try:
            st = msgspec.convert(raw, TargetState)
        except msgspec.ValidationError as exc:
            problems.append(f"targets/{task}: {exc}; reset")
            continue
        judged_ok = all(
            math.isfinite(x) and x >= 0.0 for j in st.judged.values()
            for x in (j.n, j.raw, j.counted)) and set(st.judged) <= set(settings.strategies)
        # A correction adds a whole reward where the one it replaced had decayed, so R may
        # pass N by a little: not corruption.
        if math.isfinite(st.reward_sum) and math.isfinite(st.count) and (
                -1e-6 <= st.reward_sum <= st.count * 1.01 + 1.0) and judged_ok:
            targets[task] = st
        else:
            problems.append(f"targets/{task}: bad sums; reset")
    return problems


class Bookkeeper:
    """One thread that logs and learns from answered requests, in the order they were
    answered, off the request path (a queue put is all an answer waits for). Job failures
    are logged, never raised to a caller."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[Callable[[], object] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._pending = 0

    @property
    def backlog(self) -> int:
        """Jobs submitted and not yet finished."""
        return self._pending

    def submit(self, job: Callable[[], object]) -> None:
        with self._idle:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="conductor-learning",
                                                daemon=True)
                self._thread.start()
        self._queue.put(job)

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                job()
            except Exception:  # a bookkeeping failure must not stop the next ones
                log.exception("learning from an answered request failed")
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every submitted job has run."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Run what is queued, then stop the thread."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)
            self._thread = None


class Follower:
    """A thread that applies other processes' events: ``learner.follow()`` every
    ``interval_s``. A failed read is logged and tried again at the next tick."""

    def __init__(self, learner: Learner, interval_s: float) -> None:
        self.learner = learner
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="conductor-follow", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.learner.follow()
            except Exception:  # the store may be busy or failing; routing goes on
                log.exception("applying other processes' events failed; retrying")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10.0)


class Learner:
    """Holds the learned state; ``apply`` is the only way it changes.

    Args:
        settings: strategies, task types, half-life, judge calibration settings.
        priors: per (task type, strategy), from ``conductor.bandit.priors.build_priors``.
        store: where events are logged and restored from.
        clock: wall-clock seconds.
        warm: per-prompt models fitted offline, to start from (``[policy] priors``).
    """

    def __init__(self, settings: Settings, priors: Coefficients, store: LogStore, *,
                 clock: Callable[[], float] = time.time,
                 warm: ContextPriors | None = None) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.posteriors = PosteriorState(priors)
        self.targets = {t: TargetState() for t in settings.task_types}
        p = settings.policy
        self.contexts = {t: ContextModel.for_task(post, p)
                         for t, post in self.posteriors.tasks.items()} if p.context else {}
        start_contexts(self.contexts, warm, p)  # before restore: a snapshot replaces it
        self.target_gamma = settings.target_gamma()
        min_pairs = settings.judge.min_calibration_pairs
        self.calibrations = {t: JudgeCalibration(min_pairs=min_pairs)
                             for t in settings.task_types}
        self.rates = JudgeRates(settings)  # the judge's error rates, from user labels
        self.fusion = RewardFusion()
        self.configured = configured_knobs(settings)
        self.knobs = self.configured
        self.gamma = settings.policy.gamma()
        self.lock = threading.RLock()
        self._feedback_lock = threading.Lock()
        self._pending: dict[str, list[tuple[float, str, float]]] = {}
        self._last_snapshot = clock()
        self._followed = 0  # log position through which other processes' events are in
        self._follow_lock = threading.Lock()
        self.reward_listeners: list[RewardListener] = []

    def calibrated(self, task_type: str, judge_score: float) -> float:
        """One answer's judge score on the users' scale, E[user | judge] (as it is until
        the calibration has enough pairs): for decisions about that answer."""
        cal = self.calibrations.get(task_type)
        return cal.apply(judge_score) if cal is not None else judge_score

    def _add_pair(self, task_type: str, strategy: str, judge: float, user: float) -> None:
        """A request with both a judge's score and a user's label: the calibrations
        learn it (the caller re-reads the judged rewards: ``_rescale``)."""
        if task_type in self.calibrations:
            self.calibrations[task_type].add_pair(judge, user)
            self.rates.add(task_type, strategy, judge, user)

    def _rescale(self) -> None:
        """Read every task type's judged rewards through its judge scales as they are now
        (the rates are pooled over task types, so one pair moves them all)."""
        for task, post in self.posteriors.tasks.items():
            read_judged_through(self.rates.scales(task, post.strategies), post,
                                self.targets[task], self.contexts.get(task))

    # -- the one place state changes --------------------------------------------------------

    def apply(self, event: LearningEvent) -> None:
        """Apply one event to the learned state. Callers hold ``lock``. Events naming a
        task type or strategy no longer configured are skipped."""
        match event:
            case OutcomeEvent():
                if not self._known(event.task_type, event.strategy):
                    return
                st = self.settings.strategies[event.strategy]
                ok = event.error is None
                latency = event.latency_ms
                if latency is not None and st.batch_window_ms:
                    # The policy adds the batch window to its latency prediction; the
                    # posterior models the rest, so take the window out of what was observed.
                    latency = max(1.0, latency - st.batch_window_ms)
                self.posteriors[event.task_type].observe_outcome(
                    event.strategy, latency if ok else None,
                    event.output_tokens if ok else None,
                    event.escalated if ok else None, self.gamma)
            case RewardEvent():
                if not self._known(event.task_type, event.strategy):
                    return
                post = self.posteriors[event.task_type]
                target = self.targets[event.task_type]
                # The per-prompt model learns when the reward carries its prompt's
                # features, scored against the task level before either learns from it.
                context = self.contexts.get(event.task_type)
                judged, was = event.judged, event.previous_judged
                z = np.asarray(event.features) if context is not None and len(
                    event.features) == context.size else None
                if event.previous is None:
                    learn_first_reward(post, target, context, event.strategy, event.effective,
                                       judged=judged, gamma=self.gamma,
                                       target_gamma=self.target_gamma, z=z,
                                       served=event.served)
                    return
                correct_reward(post, target, context, event.strategy, event.previous,
                               event.effective, was_judged=was, judged=judged, z=z,
                               served=event.served)
            case PolicyEvent():
                self.knobs = self._valid_knobs(event.knobs)

    def _known(self, task_type: str, strategy: str) -> bool:
        return task_type in self.posteriors.tasks and strategy in self.settings.strategies

    def _valid_knobs(self, knobs: PolicyKnobs) -> PolicyKnobs:
        """Stored knobs against today's config: unknown names fall back to the config's."""
        default = knobs.default_strategy
        if default not in self.settings.strategies:
            log.warning("stored default_strategy %r is not configured; using %r", default,
                        self.configured.default_strategy)
            default = self.configured.default_strategy
        exploration = {**self.configured.exploration,
                       **{t: v for t, v in knobs.exploration.items()
                          if t in self.settings.task_types}}
        return msgspec.structs.replace(knobs, default_strategy=default, exploration=exploration)

    # -- live events --------------------------------------------------------------------------

    def record_outcome(self, task_type: str, outcome: Outcome) -> None:
        """Log an outcome and learn its latency, tokens and escalation (unless frozen)."""
        with self.lock:
            frozen = self.knobs.freeze
            self.store.record_outcome(outcome, task_type=task_type, applied=not frozen)
            if not frozen:
                self.apply(OutcomeEvent(
                    request_id=outcome.request_id, task_type=task_type,
                    strategy=outcome.strategy, latency_ms=outcome.latency_ms,
                    output_tokens=outcome.output_tokens, escalated=outcome.escalated,
                    error=outcome.error))
            self._maybe_snapshot()

    def add_reward(self, reward: Reward, *, wait: bool | None = None) -> Reward:
        """Fuse a reward into its request's effective reward and correct the posterior by
        the change. Logged with its source, raw score and the effective score. User
        ratings are durable before this returns (unless ``wait`` is False)."""
        task, strategy = reward.task_type, reward.strategy
        handle: Future[None] | None
        with self.lock:
            if self.fusion.get(reward.request_id) is None:
                rec = self.store.get_request(reward.request_id)
                if rec is not None:
                    self.fusion.rebuild(
                        reward.request_id, rec.rewards,
                        rec.decision.features if rec.decision else (),
                        served=rec.decision is None or rec.decision.routed_by != "probe")
            before = self.fusion.get(reward.request_id)
            had_judge = before is not None and "judge" in before.scores
            had_user = before is not None and bool(before.users)
            was_source = before.effective_source if before is not None else None
            old, new = self.fusion.update(reward)
            st = self.fusion.get(reward.request_id)
            assert st is not None
            pair = None
            if task in self.calibrations and "judge" in st.scores and st.users and (
                    not had_judge or not had_user):
                pair = (st.scores["judge"], sum(st.users.values()) / len(st.users))
                self._add_pair(task, strategy, *pair)
                self._rescale()
            judged = st.effective_source == "judge"
            was_judged = old is not None and was_source == "judge"
            # A label equal to the judged score it replaces still moves the reward out of
            # the judged ones.
            applied = (self._known(task, strategy) and not self.knobs.freeze
                       and new is not None and (new != old or judged != was_judged))
            reward = msgspec.structs.replace(reward, effective_score=new)
            handle = self.store.record_reward(
                reward, applied=applied, previous_score=old if applied else None, wait=False,
                pair=pair, previous_source=was_source if applied and old is not None else None)
            if applied:
                assert new is not None
                self.apply(RewardEvent(request_id=reward.request_id, task_type=task,
                                       strategy=strategy, effective=new, previous=old,
                                       features=st.features, judged=judged,
                                       previous_judged=was_judged, served=st.served))
                for listener in self.reward_listeners:
                    listener(task, new, old)
        if handle is not None and wait is not False:
            handle.result()  # durable before we acknowledge
        return reward

    def record_only(self, reward: Reward) -> Reward:
        """Log a reward for audit without learning from it (a heuristic's pass where the
        judge grades the task type: a passing format check is not a right answer)."""
        self.store.record_reward(reward, applied=False, wait=False)
        return reward

    # -- feedback that waits for its request -------------------------------------------------

    def keep_pending(self, request_id: str, score: float, rater: str) -> Reward:
        """Keep a rating (durably) for a request not stored yet; applied when it lands."""
        now = self.clock()
        self.store.record_pending_feedback(request_id, score, rater, now)
        with self.lock:
            self._pending.setdefault(request_id, []).append((now, rater, score))
        return Reward(request_id=request_id, source="user", score=score, rater=rater,
                      created_at=now)

    def take_pending(self, request_id: str) -> list[tuple[float, str, float]]:
        with self.lock:
            return self._pending.pop(request_id, [])

    def user_reward(self, decision: Decision, strategy: str, score: float,
                    rater: str) -> Reward:
        """Apply one user's score (in [0, 1]) to a decided request; durable on return."""
        return self.add_reward(Reward(
            request_id=decision.request_id, source="user", score=score, rater=rater,
            task_type=decision.task_type, strategy=strategy, created_at=self.clock()))

    def feedback(self, request_id: str, score: float, rater: str, *, in_flight: bool,
                 pending_ok: bool) -> Reward:
        """A user's score for a request: applied when the request is stored; kept until it
        lands when it is still being served (``in_flight``) or ``pending_ok``; otherwise an
        unknown id raises NotFoundError."""
        with self._feedback_lock:
            if in_flight:
                return self.keep_pending(request_id, score, rater)
            rec = self.store.get_request(request_id)
            if rec is not None and rec.decision is not None:
                strategy = rec.outcome.strategy if rec.outcome else rec.decision.strategy
                return self.user_reward(rec.decision, strategy, score, rater)
            if not pending_ok:
                raise NotFoundError(f"unknown request id {request_id!r}")
            return self.keep_pending(request_id, score, rater)

    # -- policy ---------------------------------------------------------------------------------

    def update_policy(self, actor: str, *, version: str | None = None,
                      rollout_percent: float | None = None,
                      default_strategy: str | None = None, freeze: bool | None = None,
                      exploration: dict[str, float] | None = None) -> PolicyKnobs:
        """Change the policy knobs: validated, recorded durably (who, when, what), applied."""
        check_knob_changes(self.settings, rollout_percent, default_strategy, exploration)
        with self.lock:
            k = self.knobs
            knobs = PolicyKnobs(
                version=version if version is not None else k.version,
                rollout_percent=rollout_percent if rollout_percent is not None
                else k.rollout_percent,
                default_strategy=default_strategy or k.default_strategy,
                freeze=freeze if freeze is not None else k.freeze,
                exploration={**k.exploration, **(exploration or {})})
            event = PolicyEvent(knobs=knobs, actor=actor, configured=self.configured)
            self.store.record_policy_change(event)
            self.apply(event)
        return knobs

    # -- state ----------------------------------------------------------------------------------

    def scale_report(self) -> dict[str, dict[str, Any]]:
        """Per task type: the scale its quality is learned on ("calibrated": judged
        rewards read through the judge's error rates, measured on user labels; "judge":
        no labels yet, or too few, so the judge's scores as they are), the rates and the
        labels behind them, and the served traffic's mean quality on that scale (the
        target's window)."""
        with self.lock:
            return {task: {**self.rates.report(task),
                           "served_quality": self.targets[task].mean()}
                    for task in self.rates.all}

    def state(self) -> dict[str, Any]:
        with self.lock:
            return {**self.posteriors.to_dict(), "snapshot_version": SNAPSHOT_VERSION,
                    "targets": msgspec.to_builtins(self.targets),
                    "contexts": {t: c.to_dict() for t, c in self.contexts.items()},
                    "policy": msgspec.to_builtins(PolicyEvent(
                        knobs=self.knobs, configured=self.configured))}

    def load_state(self, data: Any) -> list[str]:
        """Load learned state; returns what was repaired (never raises on bad numbers)."""
        with self.lock:
            problems = self.posteriors.load(data)
            problems += load_targets(self.targets, data, self.settings)
            contexts = data.get("contexts") if isinstance(data, dict) else None
            for task, model in self.contexts.items():
                saved = contexts.get(task) if isinstance(contexts, dict) else None
                if saved is not None:
                    problems += [f"contexts/{task}/{x}" for x in model.load(saved)]
            policy = data.get("policy") if isinstance(data, dict) else None
            if policy is not None:
                try:
                    self._restore_policy(msgspec.convert(policy, PolicyEvent))
                except msgspec.ValidationError as exc:
                    problems.append(f"policy: {exc}; using the config's")
            return problems

    def _restore_policy(self, event: PolicyEvent) -> None:
        """A stored policy is in force unless the config's [policy] changed since it was
        set (then the operator's edit of the file wins)."""
        if event.configured is not None and event.configured != self.configured:
            log.info("the config's [policy] changed since the stored policy was set; "
                     "using the config's")
            self.knobs = self.configured
            return
        self.apply(event)

    def restore(self) -> list[str]:
        """Rebuild from the store: its last snapshot plus every event after it, through
        ``apply``. Returns what had to be repaired."""
        problems: list[str] = []
        with self.lock:
            upto = self.store.log_position()  # first: what commits later, follow() gets
            snap = self.store.latest_snapshot()
            mark = LogMark()
            if snap is not None:
                seq, state = snap
                mark = LogMark(seq=seq)  # a snapshot from before log positions
                problems += self.load_state(state)
                saved = state.get("log_mark") if isinstance(state, dict) else None
                if saved is not None:
                    try:
                        mark = msgspec.convert(saved, LogMark)
                    except msgspec.ValidationError as exc:
                        problems.append(f"log_mark: {exc}; replaying from seq {seq}")
            if snap is None or not (isinstance(snap[1], dict) and "policy" in snap[1]):
                stored = self.store.latest_policy()
                if stored is not None:
                    self._restore_policy(stored)
            # Every pair first: the judged rewards the events bring are read (and the
            # per-prompt model scores them) on the calibrated scale, nearer what the live
            # process used than the judge's own (pairs arrive in log order only live).
            for task, strategy, judge, user in self.store.judge_user_pairs():
                self._add_pair(task, strategy, judge, user)
            self._rescale()
            events = self.store.events_after(mark, upto)
            self._apply_logged(events, upto)
            for rid, created, rater, score in self.store.pending_feedback():
                self._pending.setdefault(rid, []).append((created, rater, score))
        for p in problems:
            log.warning("learned state repaired: %s", p)
        log.info("state restored from snapshot at %s plus %d events", mark, len(events))
        return problems

    def follow(self) -> int:
        """Apply the events other processes committed since the last call (workers and
        replicas sharing the store), in log order; returns how many. The store is read
        outside the lock, so requests keep deciding meanwhile."""
        with self._follow_lock:  # one follower at a time: each event once
            upto = self.store.log_position()
            if upto <= self._followed:
                return 0
            mark = LogMark(origin=self.store.origin, seq=_NEVER, pos=self._followed)
            events = self.store.events_after(mark, upto)
            self._apply_logged(events, upto, pairs=True)
        return len(events)

    def _apply_logged(self, events: list[LearningEvent], upto: int, *,
                      pairs: bool = False) -> None:
        """Apply events read from the log (at restart, or other processes'), through log
        position ``upto``. A stored policy goes through ``_restore_policy``. ``pairs``:
        add the calibration pairs other processes' rewards completed (a restart reads
        every pair from the store instead)."""
        with self.lock:
            for event in events:
                if isinstance(event, PolicyEvent):
                    self._restore_policy(event)
                    continue
                if isinstance(event, RewardEvent):
                    # Our cached fusion of this request misses the other process's reward:
                    # the next reward here rebuilds it from the store.
                    self.fusion.forget(event.request_id)
                    if pairs and event.pair is not None:
                        self._add_pair(event.task_type, event.strategy, *event.pair)
                        self._rescale()
                    if not event.applied:
                        continue
                self.apply(event)
            self._followed = upto

    def _maybe_snapshot(self, force: bool = False) -> None:
        now = self.clock()
        if force or now - self._last_snapshot >= self.settings.storage.snapshot_every_s:
            self._last_snapshot = now
            seq = self.store.last_seq()
            mark = LogMark(origin=self.store.origin, seq=seq, pos=self._followed)
            self.store.save_snapshot(seq, {**self.state(),
                                           "log_mark": msgspec.to_builtins(mark)},
                                     wait=force)

    def snapshot(self) -> None:
        """Save the learned state now and wait until it is committed."""
        with self.lock:
            self._maybe_snapshot(force=True)


def quality_summary(learner: Learner) -> dict[str, dict[str, tuple[float, float]]]:
    """(mean, std) of quality per task type and strategy, read under the learner's lock."""
    with learner.lock:
        out = {}
        for task, post in learner.posteriors.tasks.items():
            m, s = post.quality_mean(), post.quality_std()
            out[task] = {n: (float(m[i]), float(s[i])) for i, n in enumerate(post.strategies)}
        return out


def quality_intervals(learner: Learner, level: float = 0.95
                      ) -> dict[str, dict[str, dict[str, float]]]:
    """Per task type and strategy: the posterior mean of quality, its central ``level``
    interval (Beta quantiles) and the rewards behind it (decayed), under the lock."""
    from scipy.stats import beta

    tail = (1.0 - level) / 2.0
    with learner.lock:
        out: dict[str, dict[str, dict[str, float]]] = {}
        for task, post in learner.posteriors.tasks.items():
            a, b = post.quality_params()
            lo, hi = beta.ppf(tail, a, b), beta.ppf(1.0 - tail, a, b)
            m = post.quality_mean()
            seen = post.evidence["q_s"] + post.evidence["q_f"]
            out[task] = {n: {"mean": float(m[i]), "low": float(lo[i]),
                             "high": float(hi[i]), "rewards": float(seen[i])}
                         for i, n in enumerate(post.strategies)}
        return out
