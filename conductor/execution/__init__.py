"""Execution: running a decided strategy against the providers.

``Upstream`` is the one path to a model (provider, retries within the deadline, the model's
circuit breaker). Each execution mode (direct, batch, verified) is an object behind the
``ExecutionMode`` protocol; a new mode is one new class. ``Executor`` tries a request's
candidates in order (the decided strategy, then its fallbacks), for whole answers and for
streams alike, and records every call it made.
"""

from conductor.execution.executor import Attempt, Executor, Plan
from conductor.execution.health import Health
from conductor.execution.modes import (
           BatchMode,
           DirectMode,
           ExecutionMode,
           VerifiedMode,
           build_modes,
)
from conductor.execution.upstream import Upstream

__all__ = ["Attempt", "BatchMode", "DirectMode", "ExecutionMode",
           "Executor", "Health", "Plan", "Upstream", "VerifiedMode", "build_modes"]
