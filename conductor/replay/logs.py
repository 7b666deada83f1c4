"""Logged traffic (bandit feedback): Conductor's own logs, where only the chosen
strategy's outcome is known, with the probability it was chosen with.

Reads a SQLite database, a ``conductor export`` JSONL file, or a JSONLLogStore log.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
from msgspec import Struct

from conductor.errors import InvalidRequestError, StorageError
from conductor.storage.jsonl import read_log


class LoggedRecord(Struct, kw_only=True):
    request_id: str
    created_at: float
    task_type: str
    action: str  # the strategy the logging policy chose
    propensity: float
    routed_by: str
    min_quality: float | None
    max_latency_ms: float | None
    max_cost_usd: float | None
    input_tokens: int
    quality_target: float | None = None  # the request's own target (a hint), if it set one
    client_id: str = "default"
    executed: str | None = None
    quality: float | None = None  # the request's fused reward (None: no reward yet)
    cost_usd: float | None = None
    latency_ms: float | None = None
    output_tokens: int | None = None
    error: bool = False
    judge: float | None = None  # the judge's raw score, when it judged this request
    judged: bool = False  # ``quality`` is that score as the judge gave it
    user: float | None = None  # the users' mean rating, when they rated it
    features: tuple[float, ...] = ()  # the prompt's features, when decided per prompt


def _record(decision: dict[str, Any], outcome: dict[str, Any] | None,
            rewards: list[dict[str, Any]]) -> LoggedRecord:
    c = decision.get("constraints") or {}
    quality, source = None, None
    for r in rewards:  # the last effective score is the request's fused reward
        eff = r.get("effective_score")
        if eff is not None:
            quality, source = float(eff), r.get("source")
    if quality is None and rewards:
        quality = float(sum(r["score"] for r in rewards) / len(rewards))
    judge = [float(r["score"]) for r in rewards if r.get("source") == "judge"]
    user = [float(r["score"]) for r in rewards if r.get("source") == "user"]
    return LoggedRecord(
        request_id=decision["request_id"], created_at=float(decision.get("created_at", 0.0)),
        task_type=decision["task_type"], action=decision["strategy"],
        propensity=float(decision["propensity"]), routed_by=decision.get("routed_by", "policy"),
        min_quality=c.get("min_quality"), max_latency_ms=c.get("max_latency_ms"),
        max_cost_usd=c.get("max_cost_usd"), input_tokens=int(decision.get("input_tokens", 0)),
        quality_target=c.get("quality_target"), client_id=decision.get("client_id") or "default",
        executed=outcome.get("strategy") if outcome else None,
        cost_usd=outcome.get("cost_usd") if outcome else None,
        latency_ms=outcome.get("latency_ms") if outcome else None,
        output_tokens=outcome.get("output_tokens") if outcome else None,
        error=bool(outcome.get("error")) if outcome else False, quality=quality,
        judge=judge[-1] if judge else None, user=sum(user) / len(user) if user else None,
        # Logs from before judged rewards were kept apart hold a mapped value instead.
        judged=source == "judge" and bool(judge) and quality == judge[-1],
        features=tuple(float(x) for x in decision.get("features") or ()))


def records_from_store(rows: Iterable[Any]) -> list[LoggedRecord]:
    """Logged requests from a store's ``iter_requests`` rows (those with a decision)."""
    raw = [msgspec.to_builtins(r) for r in rows]
    return [_record(r["decision"], r["outcome"], r["rewards"]) for r in raw
            if r.get("decision")]


def read_logged(path: str | Path) -> list[LoggedRecord]:
    """Logged requests in time order, from any of the three formats."""
    p = Path(path)
    if not p.exists():
        raise InvalidRequestError(f"{p}: no such log file", field="log_file")
    if p.suffix in (".db", ".sqlite", ".sqlite3"):
        from conductor.storage.sqlite import SQLiteStore

        store = SQLiteStore(p)
        try:
            recs = records_from_store(store.iter_requests())
        finally:
            store.close()
    else:
        decisions: dict[str, dict[str, Any]] = {}
        outcomes: dict[str, dict[str, Any]] = {}
        rewards: dict[str, list[dict[str, Any]]] = {}
        try:
            lines = list(read_log(p))
        except StorageError:
            raise
        for obj in lines:
            if "decision" in obj and "type" not in obj:  # export format
                rid = obj["request_id"]
                decisions[rid] = obj["decision"]
                if obj.get("outcome"):
                    outcomes[rid] = obj["outcome"]
                rewards[rid] = list(obj.get("rewards") or [])
            elif obj.get("type") == "decision":
                decisions[obj["decision"]["request_id"]] = obj["decision"]
            elif obj.get("type") == "outcome":
                outcomes[obj["outcome"]["request_id"]] = obj["outcome"]
            elif obj.get("type") == "reward":
                r = dict(obj["reward"])
                rewards.setdefault(r["request_id"], []).append(r)
        recs = [_record(d, outcomes.get(rid), rewards.get(rid, []))
                for rid, d in decisions.items()]
    recs.sort(key=lambda r: r.created_at)
    if not recs:
        raise InvalidRequestError(f"{p}: no logged decisions", field="log_file")
    return recs
