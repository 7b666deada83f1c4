"""Records the store tests write: one decision, outcome and request of each shape, with
values that survive only an exact round trip (float64, feature bytes, JSON, NULLs)."""

from __future__ import annotations

from conductor.types import (
    CallRecord,
    CompletionRequest,
    Constraints,
    Decision,
    Mode,
    Outcome,
    StrategySample,
)


def decision(rid: str, t: float = 1000.0) -> Decision:
    return Decision(
        request_id=rid, task_type="classify", strategy="turbo-cheap", model="gpt-4o-mini",
        mode=Mode.DIRECT, predicted_quality=0.91, predicted_latency_ms=812.5,
        predicted_cost_usd=1.25e-5, propensity=0.4375, explored=True, constraint_relaxed=False,
        policy_version="v7", routed_by="policy", policy_choice="turbo-cheap",
        constraints=Constraints(min_quality=0.85, max_latency_ms=3000.0), client_id="acme",
        input_tokens=42, features=(0.1, -2.5e-7, 3.0), set_aside={"turbo-quality": "dominated"},
        samples=(StrategySample(strategy="turbo-cheap", quality=0.93, latency_p95_ms=1500.0,
                                cost_usd=1.25e-5, feasible=True),),
        created_at=t)


def outcome(rid: str) -> Outcome:
    return Outcome(
        request_id=rid, strategy="turbo-cheap", model="gpt-4o-mini", latency_ms=640.0,
        input_tokens=42, output_tokens=3, cost_usd=8.1e-6, cost_estimated=True, error=None,
        fallback_used=True, fallback_chain=("batch-cheap", "turbo-cheap"), sla_met=True,
        escalated=False,
        calls=(CallRecord(strategy="batch-cheap", model="gpt-4o-mini", error="timeout"),
               CallRecord(strategy="turbo-cheap", model="gpt-4o-mini", latency_ms=640.0,
                          input_tokens=42, output_tokens=3, cost_usd=8.1e-6)),
        text="positive", finish_reason="stop", created_at=1001.0)


def request(rid: str) -> CompletionRequest:
    return CompletionRequest(prompt="Great value!", task_type="classify", request_id=rid,
                             client_id="acme", metadata={"labels": ["positive", "negative"]})
