"""The executor's deadline check (the candidates themselves run in tests/integration)."""

from __future__ import annotations

import time

from conductor.execution.executor import DEADLINE_SLACK_S, Attempt, Executor, Plan


def test_a_timeout_that_fires_just_before_the_deadline_is_the_deadline() -> None:
    # A call timed to the time left can fire a millisecond early (uvloop's clock): that
    # is the deadline passing, named as such, and no further candidate starts.
    plan = Plan(request_id="r", candidates=("a", "b"),
                deadline=time.monotonic() + DEADLINE_SLACK_S / 5)
    attempt = Attempt(plan)
    assert Executor._past_deadline(plan, attempt)
    assert "deadline" in str(attempt.failure) and attempt.error is not None
    later = Plan(request_id="r", candidates=("a",), deadline=time.monotonic() + 60.0)
    assert not Executor._past_deadline(later, Attempt(later))
