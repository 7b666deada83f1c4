"""Judge score parsing, sampling and the background runner."""

from __future__ import annotations

import asyncio
import threading

import pytest

from conductor.errors import JudgeError
from conductor.evaluators.calibration import JudgeCalibration
from conductor.evaluators.judge import (
    JudgeRunner,
    JudgeSampler,
    judge_messages,
    parse_score,
    score_to_unit,
)


@pytest.mark.parametrize(("reply", "score"), [
    ("Score: 8", 8),
    ("score:10", 10),
    ("**Score:** 7/10", 7),
    ("The answer is mostly right but misses the refund policy.\nScore: 6", 6),
    ("Rating: 3 out of 10", 3),
    ("I'd say Score: 4. On reflection, Score: 5", 5),
    ("9", 9),
    ("7/10", 7),
])
def test_scores_are_parsed_from_chatty_replies(reply: str, score: int) -> None:
    assert parse_score(reply) == score


@pytest.mark.parametrize("reply", ["", "Great answer!", "Score: eleven", "Score: 0",
                                   "Score: 15", "Version 2.5 is better"])
def test_a_reply_with_no_score_is_a_failure_not_a_zero(reply: str) -> None:
    with pytest.raises(JudgeError, match="no score in judge reply"):
        parse_score(reply)


def test_scores_map_to_the_unit_interval() -> None:
    assert [score_to_unit(n) for n in (1, 10)] == [0.0, 1.0]
    assert score_to_unit(5) == pytest.approx(4 / 9)


def test_rubric_per_task_type() -> None:
    system, user = judge_messages("summarize", "Summarize: ...", "A summary.")
    assert "faithful" in system.content and "Score: N" in system.content
    assert "A summary." in user.content
    assert "label" in judge_messages("classify", "q", "a")[0].content


def test_sampling_rises_with_uncertainty_and_respects_the_hourly_budget() -> None:
    now = [0.0]
    s = JudgeSampler(max_calls_per_hour=3, reference_std=0.02, clock=lambda: now[0])
    assert s.probability(0.05, 0.01) == 0.05
    assert s.probability(0.05, 0.1) == pytest.approx(0.25)
    assert s.probability(0.05, 0.5) == 1.0
    assert s.probability(0.0, 0.5) == 0.0
    assert [s.take(1.0, 0.5) for _ in range(5)] == [True, True, True, False, False]
    assert s.budget_skipped == 2
    now[0] = 3601.0
    assert s.take(1.0, 0.5)
    assert not s.take(0.2, 0.5)  # not sampled at all: not a budget skip
    assert s.budget_skipped == 2


def test_runner_drops_when_full_and_counts_failures() -> None:
    gate = threading.Event()
    runner = JudgeRunner(workers=1, queue_size=2)

    async def blocked() -> None:
        await asyncio.to_thread(gate.wait)

    async def failing() -> None:
        raise RuntimeError("judge upstream down")

    accepted = [runner.submit(blocked) for _ in range(5)]
    assert accepted == [True, True, True, False, False]  # 1 running + 2 queued
    assert runner.dropped == 2
    gate.set()
    assert runner.wait_idle(10)
    assert runner.submit(failing)
    assert runner.wait_idle(10)
    assert (runner.done, runner.failed) == (3, 1)
    runner.close()


def test_calibration_corrects_a_judge_that_is_too_generous() -> None:
    import numpy as np
    rng = np.random.default_rng(3)
    cal = JudgeCalibration(min_pairs=30)
    for _ in range(100):
        user = float(rng.uniform(0.0, 0.8))
        cal.add_pair(min(1.0, user + 0.2 + rng.normal(0, 0.03)), user)
    fresh_user = rng.uniform(0.0, 0.8, 500)
    fresh_judge = np.minimum(1.0, fresh_user + 0.2 + rng.normal(0, 0.03, 500))
    raw_error = np.mean(np.abs(fresh_judge - fresh_user))
    cal_error = np.mean(np.abs([cal.apply(j) - u for j, u in zip(fresh_judge, fresh_user,
                                                                   strict=True)]))
    assert raw_error > 0.19
    assert cal_error < 0.05
    agree = cal.agreement()
    assert agree["pairs"] == 100 and agree["calibrated"] and agree["correlation"] > 0.95
    assert agree["mae"] == pytest.approx(0.2, abs=0.02)


def test_calibration_waits_for_enough_pairs() -> None:
    cal = JudgeCalibration(min_pairs=30)
    for _ in range(29):
        cal.add_pair(0.9, 0.5)
    assert cal.apply(0.9) == 0.9
    cal.add_pair(0.9, 0.5)
    assert cal.apply(0.9) == pytest.approx(0.5, abs=0.1)
