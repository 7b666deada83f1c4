"""Conductor routes LLM traffic to the cheapest strategy that meets each request's constraints.

    from conductor import Conductor, TaskType
    conductor = Conductor()                       # the built-in demo world, no API key
    result = conductor.complete(prompt="Great product!", task_type=TaskType.CLASSIFY)
"""

from conductor.coefficients import load_coefficients
from conductor.config import Settings, default_settings, load_settings
from conductor.errors import ConductorError
from conductor.learning import rating_to_score
from conductor.router import Conductor
from conductor.types import (
    CompletionRequest,
    CompletionResult,
    Constraints,
    Decision,
    Message,
    Mode,
    Outcome,
    Reward,
    TaskType,
)

__all__ = [
    "CompletionRequest",
    "CompletionResult",
    "Conductor",
    "ConductorError",
    "Constraints",
    "Decision",
    "Message",
    "Mode",
    "Outcome",
    "Reward",
    "Settings",
    "TaskType",
    "default_settings",
    "load_coefficients",
    "load_settings",
    "rating_to_score",
]
