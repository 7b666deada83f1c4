"""What happens to answers: judge sampling follows the posterior's uncertainty."""

from __future__ import annotations

from conductor import Conductor
from conductor.types import RewardEvent


def _judged_requests(preloaded: int, n: int = 200) -> int:
    # The built-in demo world (its judge is turbo-cheap), learning only from the judge.
    with Conductor(seed=5, evaluators=[]) as c:
        for k in range(preloaded):  # a narrow posterior for the answering strategy
            c.learner.apply(RewardEvent(request_id=str(k), task_type="chat",
                                        strategy="turbo-quality", effective=float(k % 10 > 0)))
        for _ in range(n):
            c.complete("My order is late", task_type="chat", strategy="turbo-quality")
        assert c.wait_for_judges(30)
        return c.evaluation.runner.submitted


def test_judge_sampling_is_boosted_where_the_posterior_is_wide() -> None:
    """chat samples 5% of answers at the reference width (std 0.02), more where the
    posterior is wider: a fresh strategy is judged far more often than a known one."""
    known = _judged_requests(preloaded=20_000)
    fresh = _judged_requests(preloaded=0)
    assert 3 <= known <= 20  # ~5% of 200
    assert fresh >= 2 * known
