"""What every SQL log store does, whatever the database: the write queue, the reads.

One writer thread (``writer.WriteQueue``) commits queued rows in batches (up to
``batch_rows`` rows or ``batch_interval_s``). Durability contract:

* decisions and outcomes may be acknowledged before they commit (they are queued);
* user rewards, snapshots and policy changes return only after their batch committed;
* ``close()`` drains the queue (bounded by ``drain_timeout_s``) and logs what it wrote.

Outcome, reward and policy rows carry ``origin`` (the process that applied them) and
``seq`` (the order it applied them in), and get a log position (``pos``) when committed:
one counter for every table and process, taken under a lock held until commit, so
positions follow commit order. "Last snapshot + the events after its mark" rebuilds the
posterior exactly, and other processes tail the log by position.

A backend (``SQLiteStore``, ``PostgresStore``) opens the database, runs queries and
transactions, and renders the inserts in its dialect. SQL here is written with ``?`` and
``:name`` parameters; a backend with another style converts it (``pyformat``).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import msgspec
import numpy as np

from conductor.errors import StorageError
from conductor.storage.base import BaseLogStore, LogMark, RequestRecord
from conductor.storage.writer import BARRIER, QueuedRow, WriteQueue
from conductor.types import (
    CallRecord,
    CompletionRequest,
    Constraints,
    Decision,
    LearningEvent,
    Outcome,
    OutcomeEvent,
    PolicyEvent,
    PolicyKnobs,
    Reward,
    RewardEvent,
    StrategySample,
)

log = logging.getLogger("conductor.storage")

# The columns each queued row writes, and the key a re-write replaces on (None: append).
INSERTS: dict[str, tuple[tuple[str, ...], str | None]] = {
    "requests": (("request_id", "created_at", "client_id", "task_type", "constraints",
                  "prompt_sha256", "prompt", "metadata"), "request_id"),
    "decisions": (("request_id", "created_at", "task_type", "client_id", "strategy", "model",
                   "mode", "propensity", "explored", "constraint_relaxed", "policy_version",
                   "routed_by", "policy_choice", "predicted_quality", "predicted_latency_ms",
                   "predicted_cost_usd", "input_tokens", "constraints", "samples",
                   "quality_target", "set_aside", "held_back", "features", "per_prompt",
                   "quality_scale"),
                  "request_id"),
    "outcomes": (("request_id", "seq", "created_at", "task_type", "strategy", "model",
                  "latency_ms", "input_tokens", "output_tokens", "cost_usd", "cost_estimated",
                  "error", "fallback_used", "fallback_chain", "sla_met", "escalated", "calls",
                  "finish_reason", "response_sha256", "response", "applied", "origin", "pos"),
                 "request_id"),
    "rewards": (("seq", "request_id", "created_at", "task_type", "strategy", "source", "score",
                 "previous_score", "sampling_probability", "rater", "applied",
                 "effective_score", "origin", "pos", "pair_judge", "pair_user",
                 "previous_source"), None),
    "pending_feedback": (("request_id", "created_at", "score", "rater"), None),
    "judge_calls": (("request_id", "created_at", "strategy", "model", "score", "raw_reply",
                     "cost_usd", "latency_ms", "error", "self_graded", "answer_chars"), None),
    "posterior_snapshots": (("created_at", "seq", "state"), None),
    "policy_history": (("created_at", "actor", "settings", "seq", "configured", "origin",
                        "pos"), None),
}
STATEMENTS = {
    "pending_feedback_done": "DELETE FROM pending_feedback WHERE request_id = :request_id",
    "posterior_snapshots_prune": "DELETE FROM posterior_snapshots WHERE id NOT IN"
                                 " (SELECT id FROM posterior_snapshots ORDER BY id DESC"
                                 " LIMIT :keep)",
}

_EVENT_TABLES = frozenset({"outcomes", "rewards", "policy_history"})
_json = msgspec.json.Encoder()
KEEP_SNAPSHOTS = 3


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


_NAMED = re.compile(r"(?<![:\w]):(\w+)")


def pyformat(sql: str) -> str:
    """``?`` and ``:name`` parameters as ``%s`` and ``%(name)s`` (psycopg's style)."""
    return _NAMED.sub(r"%(\1)s", sql).replace("?", "%s")


class Row(Protocol):
    """A result row: by position or by column name (``sqlite3.Row`` is one)."""

    def __getitem__(self, key: Any) -> Any: ...


class Transaction(Protocol):
    """One open transaction of a backend."""

    def one(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> Any: ...

    def many(self, sql: str, rows: list[dict[str, Any]]) -> None: ...


class SQLStore(BaseLogStore):
    """A log store on a SQL database; a backend subclass opens it, then calls ``_start``.

    Args:
        where: the database, as messages name it (a path, or a URL without its password).
        store_text: keep prompt and response text (a SHA-256 of each is always kept).
        batch_rows / batch_interval_s: commit when either is reached.
        drain_timeout_s: how long ``close()`` may take to write what is queued.
        max_backlog_rows: while writes fail (a full disk, a lost database), rows wait in
            memory, up to this many (the oldest beyond it are dropped and counted); they
            are written when writes work again, retried every ``retry_interval_s``.
            Durable writes (feedback, policy changes) are not kept: their caller gets the
            error.
        clock: wall-clock seconds (injectable).
    """

    errors: tuple[type[Exception], ...] = ()  # what the backend raises when a query fails

    def __init__(self, where: str, *, store_text: bool = False, batch_rows: int = 500,
                 batch_interval_s: float = 0.05, drain_timeout_s: float = 10.0,
                 max_backlog_rows: int = 100_000, retry_interval_s: float = 1.0,
                 clock: Any = time.time) -> None:
        self.where = where
        self.origin = uuid.uuid4().hex[:16]  # this process's events, among others'
        self.shared = True
        self.store_text = store_text
        self.clock = clock
        self._open_writer = partial(WriteQueue, batch_rows=batch_rows,
                                    batch_interval_s=batch_interval_s,
                                    drain_timeout_s=drain_timeout_s,
                                    max_backlog_rows=max_backlog_rows,
                                    retry_interval_s=retry_interval_s)
        self._pending: dict[str, RequestRecord] = {}  # queued, not yet committed
        self._pending_lock = threading.Lock()
        self._seq_lock = threading.Lock()
        self._last_seq = 0
        self._seq = itertools.count(1)
        self._sql = {table: self.render_insert(table, *spec) for table, spec in INSERTS.items()}
        self._sql.update(STATEMENTS)

    def _start(self) -> None:
        """Once the database is open: number events after the stored ones, start writing."""
        start = max(int(self.query(f"SELECT coalesce(max(seq), 0) FROM {t}")[0][0])
                    for t in _EVENT_TABLES)
        self._seq = itertools.count(start + 1)
        self._last_seq = start
        self.writer = self._open_writer(self.where, self._write, self.errors, self._written)

    # -- what a backend provides ---------------------------------------------------------------

    # How stored decisions are ordered when their times tie (the insertion order).
    decision_order = "created_at, rowid"

    def render_insert(self, table: str, columns: tuple[str, ...], key: str | None) -> str:
        """The insert of a queued row of ``table`` (replacing the row with the same ``key``)."""
        raise NotImplementedError

    def query(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> list[Any]:
        """Rows of a read (``?``/``:name`` parameters), by position or column name."""
        raise NotImplementedError

    def _transaction(self) -> contextlib.AbstractContextManager[Transaction]:
        """A transaction (``?``/``:name`` parameters, whatever the backend's style)."""
        raise NotImplementedError

    def _close_backend(self, drained: bool) -> None:
        """Close the connections (``drained``: the writer has finished with its own)."""
        raise NotImplementedError

    # -- reads -----------------------------------------------------------------------------

    def pending_feedback(self, max_age_s: float = 3600.0) -> list[tuple[str, float, str, float]]:
        """(request_id, created_at, rater, score) of feedback still waiting for its request."""
        rows = self.query("SELECT request_id, created_at, rater, score FROM pending_feedback "
                          "WHERE created_at >= ? ORDER BY id", (self.clock() - max_age_s,))
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def judge_user_pairs(self) -> list[tuple[str, str, float, float]]:
        """(task type, strategy, judge score, mean user score) for every request that has
        both: the data the judge's calibration is fitted on."""
        rows = self.query("""
            WITH j AS (
                SELECT request_id, task_type, strategy, score, seq,
                       row_number() OVER (PARTITION BY request_id ORDER BY seq DESC) AS k
                FROM rewards WHERE source = 'judge'),
            u AS (
                SELECT request_id, score,
                       row_number() OVER (PARTITION BY request_id, rater ORDER BY seq DESC) AS k
                FROM rewards WHERE source = 'user')
            SELECT max(j.task_type), max(j.strategy), max(j.score), avg(u.score)
            FROM j JOIN u USING (request_id)
            WHERE j.k = 1 AND u.k = 1 GROUP BY j.request_id ORDER BY min(j.seq)""")
        return [(r[0], r[1], r[2], r[3]) for r in rows]

    def latest_policy(self) -> PolicyEvent | None:
        """The policy change in force (the newest), or None."""
        rows = self.query("SELECT actor, settings, configured FROM policy_history "
                          "ORDER BY coalesce(pos, 0) DESC, id DESC LIMIT 1")
        return _policy_event(rows[0]) if rows else None

    def get_request(self, request_id: str) -> RequestRecord | None:
        with self._pending_lock:
            pending = self._pending.get(request_id)
            if pending is not None:
                return RequestRecord(request_id=request_id, decision=pending.decision,
                                     outcome=pending.outcome, rewards=list(pending.rewards),
                                     prompt=pending.prompt)
        return self._committed_request(request_id)

    def _committed_request(self, request_id: str) -> RequestRecord | None:
        rows = self.query("SELECT * FROM decisions WHERE request_id = ?", (request_id,))
        if not rows:
            return None
        req = self.query("SELECT prompt FROM requests WHERE request_id = ?", (request_id,))
        out = self.query("SELECT * FROM outcomes WHERE request_id = ?", (request_id,))
        rew = self.query("SELECT * FROM rewards WHERE request_id = ? ORDER BY seq", (request_id,))
        return RequestRecord(
            request_id=request_id, decision=decision_from_row(rows[0]),
            outcome=outcome_from_row(out[0]) if out else None,
            rewards=[reward_from_row(r) for r in rew],
            prompt=req[0]["prompt"] if req else None)

    def iter_requests(self, since: float | None = None) -> Iterator[dict[str, Any]]:
        """Logged traffic, one dict per request: decision (with propensity and constraints),
        outcome and rewards. The format ``conductor export`` writes and replay reads."""
        since = since if since is not None else float("-inf")
        rewards: dict[str, list[Reward]] = {}
        for r in self.query("SELECT * FROM rewards WHERE created_at >= ? ORDER BY seq", (since,)):
            rewards.setdefault(r["request_id"], []).append(reward_from_row(r))
        decisions = self.query("SELECT * FROM decisions WHERE created_at >= ? "
                               f"ORDER BY {self.decision_order}", (since,))
        outcomes = {r["request_id"]: r for r in self.query(
            "SELECT * FROM outcomes WHERE request_id IN "
            "(SELECT request_id FROM decisions WHERE created_at >= ?)", (since,))}
        for d in decisions:
            dec = decision_from_row(d)
            o = outcomes.get(dec.request_id)
            yield {"request_id": dec.request_id, "created_at": dec.created_at,
                   "task_type": dec.task_type, "client_id": dec.client_id,
                   "constraints": dec.constraints, "decision": dec,
                   "outcome": outcome_from_row(o) if o is not None else None,
                   "rewards": rewards.get(dec.request_id, [])}

    def export_jsonl(self, out: str | Path, since: float | None = None) -> int:
        """Write ``iter_requests`` to a JSONL file; returns the number of lines."""
        n = 0
        enc = msgspec.json.Encoder()
        try:
            with Path(out).open("wb") as fh:
                for rec in self.iter_requests(since):
                    fh.write(enc.encode(rec) + b"\n")
                    n += 1
        except OSError as exc:
            raise StorageError(f"{out}: cannot write export: {exc}") from exc
        return n

    def latest_snapshot(self) -> tuple[int, Any] | None:
        """The newest snapshot that decodes. An unreadable one is skipped with a warning:
        the events after an older snapshot (or all of them) rebuild the same posterior,
        so corrupt state loses no learning."""
        for row in self.query("SELECT id, seq, state FROM posterior_snapshots ORDER BY id DESC"):
            try:
                return int(row["seq"]), msgspec.json.decode(row["state"])
            except msgspec.DecodeError:
                log.warning("%s: posterior snapshot %d is not valid JSON; skipping it",
                            self.where, row["id"])
        return None

    def log_position(self) -> int:
        """The position of the last committed event (0 before any)."""
        return int(self.query("SELECT n FROM log_position")[0][0])

    def events_after(self, mark: LogMark, upto: int | None = None) -> list[LearningEvent]:
        """Applied outcomes, rewards and policy changes a state at ``mark`` has not seen
        (and unapplied rewards that completed a calibration pair, marked ``applied=False``),
        up to log position ``upto`` (all committed ones if None), in log order: the mark's
        own process's events after its ``seq``, every other process's after its ``pos``.
        Rows older than log positions (pos NULL) count as the empty origin's."""
        if upto is None:
            upto = self.log_position()
        # Two ranges, each on an index: others' events by position, its own by seq.
        others = "{t}origin != :origin AND {t}pos > :pos AND {t}pos <= :upto"
        own = "{t}origin = :origin AND {t}seq > :seq AND coalesce({t}pos, 0) <= :upto"
        params = {"upto": upto, "origin": mark.origin, "seq": mark.seq, "pos": mark.pos}

        def both(select: str, t: str = "") -> list[Any]:
            return self.query(f"{select} AND {others.format(t=t)} UNION ALL "
                              f"{select} AND {own.format(t=t)}", params)

        outcomes = both(
            "SELECT pos, seq, request_id, task_type, strategy, latency_ms, output_tokens,"
            " escalated, error FROM outcomes WHERE applied = 1")
        rewards = both(
            "SELECT r.pos, r.seq, r.request_id, r.task_type, r.strategy, r.score, r.source,"
            " r.previous_score, r.previous_source, r.effective_score, d.features,"
            " d.routed_by, r.pair_judge, r.pair_user, r.applied"
            " FROM rewards r LEFT JOIN decisions d USING (request_id)"
            " WHERE (r.applied = 1 OR r.pair_judge IS NOT NULL)", "r.")
        policies = both(
            "SELECT pos, seq, actor, settings, configured FROM policy_history WHERE 1 = 1")
        rows: list[tuple[int, int, LearningEvent]] = []
        for r in outcomes:
            rows.append((r["pos"] or 0, r["seq"], OutcomeEvent(
                request_id=r["request_id"], task_type=r["task_type"], strategy=r["strategy"],
                latency_ms=r["latency_ms"], output_tokens=r["output_tokens"],
                escalated=bool(r["escalated"]), error=r["error"])))
        for r in rewards:
            eff = r["effective_score"]
            rows.append((r["pos"] or 0, r["seq"], RewardEvent(
                request_id=r["request_id"], task_type=r["task_type"], strategy=r["strategy"],
                effective=r["score"] if eff is None else eff, previous=r["previous_score"],
                features=_features(r["features"]),
                pair=None if r["pair_judge"] is None else (r["pair_judge"], r["pair_user"]),
                applied=bool(r["applied"]),
                # An applied reward set its request's value, so the value is its source's.
                judged=r["source"] == "judge", previous_judged=r["previous_source"] == "judge",
                served=r["routed_by"] != "probe")))
        for r in policies:
            rows.append((r["pos"] or 0, r["seq"], _policy_event(r)))
        rows.sort(key=lambda e: (e[0], e[1]))
        return [event for _, _, event in rows]


    # -- writing ---------------------------------------------------------------------------

    def write_health(self) -> dict[str, Any]:
        """``writable`` is false from a failed commit until one succeeds (``/readyz``
        answers 503 meanwhile); then the counters and the rows waiting in memory."""
        return self.writer.health()

    def _write(self, batch: list[QueuedRow]) -> None:
        """Commit a batch in one transaction."""
        with self._transaction() as tx:
            self._write_rows(tx, batch)

    def _write_rows(self, tx: Transaction, batch: list[QueuedRow]) -> None:
        events = [i.row for i in batch if i.table in _EVENT_TABLES]
        if events:  # log positions in commit order: the row lock is held until commit
            (last,) = tx.one("UPDATE log_position SET n = n + :k RETURNING n",
                             {"k": len(events)})
            for k, row in enumerate(events, start=last - len(events) + 1):
                row["pos"] = k
        # Consecutive rows of one table go in one executemany (same order).
        for table, items in itertools.groupby(batch, key=lambda i: i.table):
            if table != BARRIER:
                tx.many(self._sql[table], [i.row for i in items])

    def _written(self, batch: list[QueuedRow]) -> None:
        """Committed: reads find these requests in the database now."""
        with self._pending_lock:
            for item in batch:
                rid = item.row.get("request_id")
                if item.table == "outcomes" and rid in self._pending:
                    del self._pending[rid]

    def next_seq(self) -> int:
        """The next event sequence number (the order events reach the posterior)."""
        with self._seq_lock:
            self._last_seq = next(self._seq)
            return self._last_seq

    def last_seq(self) -> int:
        with self._seq_lock:
            return self._last_seq

    # -- LogStore --------------------------------------------------------------------------

    def record_decision(self, decision: Decision, request: CompletionRequest) -> None:
        text = request.text()
        constraints = _json.encode(decision.constraints).decode()
        with self._pending_lock:
            self._pending[decision.request_id] = RequestRecord(
                request_id=decision.request_id, decision=decision, rewards=[],
                prompt=text if self.store_text else None)
        self.writer.put("requests", {
            "request_id": decision.request_id, "created_at": decision.created_at,
            "client_id": request.client_id, "task_type": request.task_type,
            "constraints": constraints,
            "prompt_sha256": sha256(text), "prompt": text if self.store_text else None,
            "metadata": _json.encode(request.metadata).decode() if request.metadata else None})
        self.writer.put("decisions", {
            "request_id": decision.request_id, "created_at": decision.created_at,
            "task_type": decision.task_type, "client_id": decision.client_id,
            "strategy": decision.strategy, "model": decision.model,
            "mode": decision.mode.value, "propensity": decision.propensity,
            "explored": int(decision.explored),
            "constraint_relaxed": int(decision.constraint_relaxed),
            "policy_version": decision.policy_version, "routed_by": decision.routed_by,
            "policy_choice": decision.policy_choice,
            "predicted_quality": decision.predicted_quality,
            "predicted_latency_ms": decision.predicted_latency_ms,
            "predicted_cost_usd": decision.predicted_cost_usd,
            "input_tokens": decision.input_tokens,
            "constraints": constraints,
            "samples": _json.encode(decision.samples).decode(),
            "quality_target": decision.quality_target,
            "set_aside": _json.encode(decision.set_aside).decode() if decision.set_aside
            else None, "held_back": int(decision.held_back),
            "features": np.asarray(decision.features, dtype=np.float64).tobytes()
            if decision.features else None, "per_prompt": int(decision.per_prompt),
            "quality_scale": decision.quality_scale})

    def record_outcome(self, outcome: Outcome, *, task_type: str = "",
                       applied: bool = True) -> None:
        with self._pending_lock:
            rec = self._pending.get(outcome.request_id)
            if rec is not None:  # what a read will show once committed
                rec.outcome = outcome if self.store_text else msgspec.structs.replace(
                    outcome, text="")
                task_type = task_type or (rec.decision.task_type if rec.decision else "")
        self.writer.put("outcomes", {
            "request_id": outcome.request_id, "seq": self.next_seq(),
            "created_at": outcome.created_at, "task_type": task_type,
            "strategy": outcome.strategy, "model": outcome.model,
            "latency_ms": outcome.latency_ms, "input_tokens": outcome.input_tokens,
            "output_tokens": outcome.output_tokens, "cost_usd": outcome.cost_usd,
            "cost_estimated": int(outcome.cost_estimated), "error": outcome.error,
            "fallback_used": int(outcome.fallback_used),
            "fallback_chain": _json.encode(outcome.fallback_chain).decode(),
            "sla_met": int(outcome.sla_met), "escalated": int(outcome.escalated),
            "calls": _json.encode(outcome.calls).decode(),
            "finish_reason": outcome.finish_reason, "response_sha256": sha256(outcome.text),
            "response": outcome.text if self.store_text else None, "applied": int(applied),
            "origin": self.origin, "pos": None})

    def record_reward(self, reward: Reward, *, applied: bool = True,
                      previous_score: float | None = None, wait: bool | None = None,
                      pair: tuple[float, float] | None = None,
                      previous_source: str | None = None) -> Future[None] | None:
        """User ratings are durable: returns after commit, or with ``wait=False`` returns a
        future that resolves on commit. Automatic rewards are queued. ``pair``: the
        (judge, user) calibration pair this reward completed; ``previous_source``: the
        source of the value this reward replaced."""
        with self._pending_lock:
            rec = self._pending.get(reward.request_id)
            if rec is not None:
                rec.rewards.append(reward)
        return self.writer.put("rewards", {
            "seq": self.next_seq(), "request_id": reward.request_id,
            "created_at": reward.created_at, "task_type": reward.task_type,
            "strategy": reward.strategy, "source": reward.source, "score": reward.score,
            "previous_score": previous_score,
            "sampling_probability": reward.sampling_probability, "rater": reward.rater,
            "applied": int(applied), "effective_score": reward.effective_score,
            "origin": self.origin, "pos": None, "pair_judge": pair[0] if pair else None,
            "pair_user": pair[1] if pair else None, "previous_source": previous_source},
            durable=reward.source == "user",
            wait=wait is not False)

    def record_pending_feedback(self, request_id: str, score: float, rater: str,
                                created_at: float) -> None:
        """Durable: feedback for a request not stored yet, applied when it lands."""
        self.writer.put("pending_feedback", {"request_id": request_id, "created_at": created_at,
                                       "score": score, "rater": rater}, durable=True)

    def clear_pending_feedback(self, request_id: str) -> None:
        self.writer.put("pending_feedback_done", {"request_id": request_id})

    def record_judge_call(self, row: dict[str, Any]) -> None:
        self.writer.put("judge_calls", row)

    def record_policy_change(self, event: PolicyEvent) -> None:
        """Durable: returns after the change is committed."""
        self.writer.put("policy_history", {
            "created_at": self.clock(), "actor": event.actor, "seq": self.next_seq(),
            "settings": _json.encode(event.knobs).decode(),
            "configured": _json.encode(event.configured).decode()
            if event.configured is not None else None, "origin": self.origin, "pos": None},
            durable=True)

    def save_snapshot(self, seq: int, state: dict[str, Any], *, wait: bool = False) -> None:
        """Queue a snapshot; the oldest are pruned (the newest few are kept, so an
        unreadable newest one falls back to the one before)."""
        self.writer.put("posterior_snapshots", {"created_at": self.clock(), "seq": seq,
                                          "state": _json.encode(state).decode()}, durable=wait)
        self.writer.put("posterior_snapshots_prune", {"keep": KEEP_SNAPSHOTS})

    def flush(self) -> None:
        """Return when everything queued so far is committed."""
        self.writer.flush()

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Drain the queue (bounded by ``drain_timeout_s``), then close connections."""
        if self.writer.closed:
            return
        self._close_backend(drained=self.writer.close())


def _policy_event(r: Row) -> PolicyEvent:
    configured = r["configured"]
    return PolicyEvent(
        knobs=msgspec.json.decode(r["settings"], type=PolicyKnobs), actor=r["actor"],
        configured=msgspec.json.decode(configured, type=PolicyKnobs) if configured else None)


def decision_from_row(r: Row) -> Decision:
    return Decision(
        request_id=r["request_id"], task_type=r["task_type"], strategy=r["strategy"],
        model=r["model"], mode=r["mode"], predicted_quality=r["predicted_quality"],
        predicted_latency_ms=r["predicted_latency_ms"],
        predicted_cost_usd=r["predicted_cost_usd"], propensity=r["propensity"],
        explored=bool(r["explored"]), constraint_relaxed=bool(r["constraint_relaxed"]),
        policy_version=r["policy_version"], routed_by=r["routed_by"],
        policy_choice=r["policy_choice"],
        constraints=msgspec.json.decode(r["constraints"], type=Constraints),
        client_id=r["client_id"], input_tokens=r["input_tokens"],
        samples=msgspec.json.decode(r["samples"], type=tuple[StrategySample, ...]),
        created_at=r["created_at"], quality_target=r["quality_target"],
        set_aside=msgspec.json.decode(r["set_aside"]) if r["set_aside"] else {},
        held_back=bool(r["held_back"]), per_prompt=bool(r["per_prompt"]),
        features=_features(r["features"]),
        quality_scale="calibrated" if r["quality_scale"] == "calibrated" else "as_scored")


def _features(blob: bytes | None) -> tuple[float, ...]:
    return tuple(np.frombuffer(blob, dtype=np.float64).tolist()) if blob else ()


def outcome_from_row(r: Row) -> Outcome:
    return Outcome(
        request_id=r["request_id"], strategy=r["strategy"], model=r["model"],
        latency_ms=r["latency_ms"], input_tokens=r["input_tokens"],
        output_tokens=r["output_tokens"], cost_usd=r["cost_usd"],
        cost_estimated=bool(r["cost_estimated"]), error=r["error"],
        fallback_used=bool(r["fallback_used"]),
        fallback_chain=tuple(msgspec.json.decode(r["fallback_chain"])),
        sla_met=bool(r["sla_met"]), escalated=bool(r["escalated"]),
        calls=msgspec.json.decode(r["calls"], type=tuple[CallRecord, ...]),
        text=r["response"] or "", finish_reason=r["finish_reason"], created_at=r["created_at"])


def reward_from_row(r: Row) -> Reward:
    return Reward(request_id=r["request_id"], source=r["source"], score=r["score"],
                  sampling_probability=r["sampling_probability"], rater=r["rater"],
                  task_type=r["task_type"], strategy=r["strategy"], created_at=r["created_at"],
                  effective_score=r["effective_score"])


