"""The judge over real HTTP, the reward loop end to end, calibration and feedback races."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pytest

from conductor import Conductor
from conductor.config import settings_from_dict
from conductor.errors import NotFoundError
from conductor.storage.sqlite import SQLiteStore
from conductor.testing import FakeUpstream
from tests.integration.conftest import fake_settings


def _judged(base_url: str, queue_size: int = 50, **kw: Any):
    s = fake_settings(base_url, attempts=1, **kw)
    data = msgspec.to_builtins(s)
    data["judge"] = {"strategy": "direct-strong", "workers": 2, "queue_size": queue_size}
    data["task_types"]["chat"]["judge_sample_rate"] = 1.0
    return settings_from_dict(data)


def _is_judge(body: dict[str, Any]) -> bool:
    return "strict grader" in body["messages"][0]["content"]


@pytest.mark.parametrize(("reply", "score"), [
    ("Score: 8", 7 / 9),
    ("Well, the answer is polite but vague.\n\n**Score:** 4/10 overall", 3 / 9),
])
def test_judge_replies_become_rewards(upstream: FakeUpstream, reply: str, score: float) -> None:
    upstream.behaviour.answer = lambda b: reply if _is_judge(b) else "Your order ships Monday."
    with Conductor(_judged(upstream.base_url), seed=1, evaluators=[]) as c:
        r = c.complete("Where is my order?", task_type="chat", strategy="direct-cheap")
        assert c.wait_for_judges(10)
        rec = c.log_store.get_request(r.request_id)
        judge = [x for x in rec.rewards if x.source == "judge"]
        assert len(judge) == 1 and judge[0].score == pytest.approx(score)
        assert judge[0].sampling_probability == 1.0
        assert judge[0].effective_score == pytest.approx(score)
        assert c.stats().judge_calls == 1 and c.stats().judge_failures == 0
        assert c.stats().judge_cost_usd > 0


def test_a_sampled_judge_logs_the_probability_it_was_sampled_with(
        upstream: FakeUpstream) -> None:
    # At a 5% base rate, boosted while the posterior is wide: each judged reward carries
    # the probability its request was judged with (what reweights the judged subset),
    # high at first and falling as the strategy becomes known.
    upstream.behaviour.answer = lambda b: "Score: 8" if _is_judge(b) else "Monday."
    data = msgspec.to_builtins(_judged(upstream.base_url))
    data["task_types"]["chat"]["judge_sample_rate"] = 0.05
    with Conductor(settings_from_dict(data), seed=1, evaluators=[]) as c:
        ids = []
        for _ in range(60):
            ids.append(c.complete("Where is my order?", task_type="chat",
                                  strategy="direct-cheap").request_id)
            # Each judged reward learned before the next request is sampled: on a loaded
            # machine the judge's thread could lag all 60, leaving the posterior as wide
            # at the end as at the start (a fresh-clone CI run failed so).
            assert c.wait_for_judges(10)
        probs = [x.sampling_probability for rid in ids
                 for x in c.log_store.get_request(rid).rewards if x.source == "judge"]
    print("sampling probabilities of the judged requests:", [round(p, 3) for p in probs])
    assert len(probs) >= 5
    assert all(0.05 <= p < 1.0 for p in probs)
    assert probs[-1] < probs[0]  # the boost shrinks with the posterior


def test_malformed_and_failing_judges_are_counted_and_never_reach_the_caller(
        upstream: FakeUpstream) -> None:
    upstream.behaviour.answer = lambda b: "I cannot grade this." if _is_judge(b) else "ok"
    with Conductor(_judged(upstream.base_url), seed=1, evaluators=[]) as c:
        results = [c.complete("hi", task_type="chat", strategy="direct-cheap") for _ in range(3)]
        assert all(r.text == "ok" for r in results)
        assert c.wait_for_judges(10)
        assert c.stats().judge_failures == 3 and c.evaluation.runner.failed == 3
        upstream.behaviour.fail_models = {"strong"}  # the judge's model now answers 500
        r = c.complete("hi", task_type="chat", strategy="direct-cheap")
        assert r.text == "ok"
        assert c.wait_for_judges(10)
        assert c.stats().judge_failures == 4
        rec = c.log_store.get_request(r.request_id)
        assert [x.source for x in rec.rewards] == []  # no judge reward, no fake zero


def test_a_slow_judge_does_not_slow_completions(upstream: FakeUpstream) -> None:
    release, judged = threading.Event(), threading.Event()

    def answer(body: dict[str, Any]) -> str:
        if _is_judge(body):
            release.wait(30)  # the judge answers only when the test lets it
            judged.set()
            return "Score: 9"
        return "fast answer"

    upstream.behaviour.answer = answer
    with Conductor(_judged(upstream.base_url), seed=1, evaluators=[]) as c:
        c.complete("warm up", task_type="classify", strategy="direct-cheap")
        r = c.complete("hi", task_type="chat", strategy="direct-cheap")
        # The answer came back while its judge was still held: nothing waited for it.
        assert r.text == "fast answer" and not judged.is_set()
        release.set()
        assert c.wait_for_judges(30) and judged.is_set()
        assert c.stats().judge_calls == 1


def test_the_judge_flags_grading_its_own_model(upstream: FakeUpstream, tmp_path: Path) -> None:
    upstream.behaviour.answer = lambda b: "Score: 9" if _is_judge(b) else "answer"
    store = SQLiteStore(tmp_path / "c.db")
    with Conductor(_judged(upstream.base_url), seed=1, evaluators=[], log_store=store) as c:
        c.complete("hi", task_type="chat", strategy="direct-strong")  # judge model = answer
        c.complete("hi", task_type="chat", strategy="direct-cheap")
        assert c.wait_for_judges(10)
        store.flush()
        rows = store.query("SELECT self_graded, answer_chars, score FROM judge_calls ORDER BY id")
        assert sorted(tuple(r) for r in rows) == [(0, 6, 1.0 * 8 / 9), (1, 6, 8 / 9)]


def test_calibration_corrects_a_generous_judge_end_to_end(upstream: FakeUpstream) -> None:
    """The judge is 0.2 too generous; after 100 requests rated by users too, the
    calibrated judge is within 0.05 of the users on fresh requests."""
    rng = np.random.default_rng(7)

    def answer(body: dict[str, Any]) -> str:
        text = body["messages"][-1]["content"]
        if _is_judge(body):
            q = float(re.search(r"quality=([0-9.]+)", text).group(1))
            return f"Score: {round(1 + 9 * min(1.0, q + 0.2))}"
        return f"an answer of quality={re.search(r'q=([0-9.]+)', text).group(1)}"

    upstream.behaviour.answer = answer
    # The queue holds every job: a full queue would drop judge calls, and pairs with them.
    with Conductor(_judged(upstream.base_url, queue_size=500), seed=1, evaluators=[]) as c:
        for _ in range(100):
            q = float(rng.uniform(0.0, 0.75))
            r = c.complete(f"q={q:.3f}", task_type="chat", strategy="direct-cheap")
            c.feedback(r.request_id, score=q, rater="user")
        assert c.wait_for_judges(20)
        cal = c.learner.calibrations["chat"]
        assert cal.agreement()["pairs"] == 100 and cal.active
        errors, raw = [], []
        for _ in range(200):
            q = float(rng.uniform(0.0, 0.75))
            judge = (round(1 + 9 * min(1.0, q + 0.2)) - 1) / 9
            raw.append(abs(judge - q))
            errors.append(abs(cal.apply(judge) - q))
        assert np.mean(raw) > 0.15
        assert np.mean(errors) < 0.05
        # Judge-only requests are learned as scored and read through the judge's error
        # rates: 100 more at the same qualities leave the learned quality at the users'.
        for _ in range(100):
            q = float(rng.uniform(0.0, 0.75))
            r = c.complete(f"q={q:.3f}", task_type="chat", strategy="direct-cheap")
        assert c.wait_for_judges(20)
        rec = c.log_store.get_request(r.request_id)
        judged = next(x for x in rec.rewards if x.source == "judge")
        assert judged.effective_score == judged.score  # the score as the judge gave it
        post = c.learner.posteriors["chat"]
        i = post.index["direct-cheap"]
        assert post.evidence["j_n"][i] > 90  # the judged ones, kept apart
        scale = c.stats().quality_scale["chat"]
        assert scale["scale"] == "calibrated" and scale["user_labels"] == 100
        assert scale["judge_false_positive"] == pytest.approx(0.5, abs=0.08)
        # The users' mean is 0.375; read as scored the judged half would lift it to ~0.47.
        assert float(post.quality_mean()[i]) == pytest.approx(0.375, abs=0.04)
        assert scale["served_quality"] == pytest.approx(0.375, abs=0.04)


def test_feedback_before_the_request_lands_is_kept_and_applied(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    c = Conductor(seed=1, log_store=SQLiteStore(path), evaluators=[])
    with pytest.raises(NotFoundError, match="unknown request id 'early-1'"):
        c.feedback("early-1", stars=5)
    pending = c.feedback("early-1", stars=5, rater="ann", pending_ok=True)
    assert pending.effective_score is None
    c.close()
    # The request lands after a restart: the kept rating is applied to it.
    c = Conductor(seed=1, log_store=SQLiteStore(path), evaluators=[])
    r = c.complete("hello", task_type="chat", request_id="early-1")
    user = [x for x in r.rewards if x.source == "user"]
    assert len(user) == 1 and user[0].score == 1.0 and user[0].effective_score == 1.0
    c.close()
    store = SQLiteStore(path)
    assert store.pending_feedback() == []
    assert store.query("SELECT count(*) FROM rewards WHERE source = 'user'")[0][0] == 1
    store.close()


@pytest.mark.slow
@pytest.mark.parametrize(("bar", "target"), [(0.82, "mid"), (0.895, "strong")])
def test_demo_world_converges_on_judge_rewards_only(tmp_path: Path, bar: float,
                                                    target: str) -> None:
    """The core convergence test (qualities 0.95 / 0.90 / 0.70, costs 10 / 2 / 1), learning
    only from the simulated judge: the answer's true quality (1 right, 0 wrong) + N(0, 0.1),
    clipped, on the 1-10 scale, sampled on every request.

    That judge compresses the scale: its mean score is 0.916 / 0.870 / 0.684 for the three
    models. The bars keep the core test's distances below the target on the judge's scale
    (0.05 under the middle model, 0.02 under the best): 0.82 and 0.895. (0.93 would sit
    above the best model's judged mean: no strategy can meet it until the judge is
    calibrated against users.)"""
    world = tmp_path / "world.toml"
    world.write_text(
        'judge_noise = 0.1\n'
        '[models.strong]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.95 }\n'
        '[models.mid]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.90 }\n'
        '[models.weak]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.70 }\n'
        '[output_tokens]\nchat = 20\n')
    shares = []
    for seed in range(10):
        settings = settings_from_dict({
            "providers": {"sim": {"kind": "demo", "world": str(world), "seed": seed}},
            "models": {m: {"provider": "sim", "input_usd_per_1m": p, "output_usd_per_1m": p}
                       for m, p in (("strong", 10.0), ("mid", 2.0), ("weak", 1.0))},
            "strategies": {m: {"model": m, "prior_quality": 0.5} for m in
                           ("strong", "mid", "weak")},
            "task_types": {"chat": {"min_quality": bar, "judge_sample_rate": 1.0}},
            "judge": {"strategy": "weak", "queue_size": 5000, "max_calls_per_hour": 10**6},
            "policy": {"default_strategy": "strong"},
        })
        with Conductor(settings, seed=seed, evaluators=[]) as c:
            picks = []
            for _ in range(2000):
                picks.append(c.complete("hi", task_type="chat").outcome.strategy)
                # Each judged reward lands before the next decision: the run is then the
                # same on a busy machine as on an idle one (with a wait every 50 requests,
                # how far rewards lagged depended on the machine's load, and so did the
                # strong share: 0.833 on a loaded CI run against >= 0.85 idle).
                c.wait_for_judges(10)
            shares.append(np.mean([p == target for p in picks[-500:]]))
            assert c.stats().judge_failures == 0
    print(f"bar {bar}: {target} share of the last 500 decisions per seed: {shares}")
    assert np.mean(shares) >= 0.85
    assert sum(s >= 0.6 for s in shares) >= 9


def test_where_the_judge_grades_a_task_type_a_passing_format_check_is_not_quality(
        upstream: FakeUpstream) -> None:
    """Every answer is a valid label (the heuristic passes) and the judge finds them all
    poor (3/10). Learned from the judged sample only, the strategy's quality is the
    judge's; the heuristic's 1.0 on the unjudged answers is logged for audit, never
    learned. Without a judge the heuristic is the only signal there is, and is learned."""
    upstream.behaviour.answer = lambda b: "Score: 3" if _is_judge(b) else "positive"
    data = msgspec.to_builtins(_judged(upstream.base_url, queue_size=500))
    data["task_types"]["classify"]["labels"] = ["positive", "negative"]
    # 2%, raised while the posterior is wide: most of 100 answers stay unjudged.
    data["task_types"]["classify"]["judge_sample_rate"] = 0.02
    with Conductor(settings_from_dict(data), seed=1, evaluators=[]) as c:
        ids = [c.complete(f"Great value {i}", task_type="classify",
                          strategy="direct-cheap").request_id for i in range(100)]
        assert c.wait_for_judges(20)
        post = c.learner.posteriors["classify"]
        i = post.index["direct-cheap"]
        judged = sum(any(x.source == "judge" for x in c.log_store.get_request(r).rewards)
                     for r in ids)
        assert 5 <= judged < 50
        assert post.quality_trials()[i] == pytest.approx(judged, rel=0.02)  # judged only (decay)
        assert post.quality_mean()[i] < 0.5  # the judge's 2/9, from a prior of 0.9
        heuristic = [x for r in ids for x in c.log_store.get_request(r).rewards
                     if x.source == "heuristic"]
        assert len(heuristic) == 100 and all(x.score == 1.0 for x in heuristic)
        assert all(x.effective_score is None for x in heuristic)  # logged, not learned
    # No judge, or one with no calls to spend: the heuristics are all there is.
    for judge in ({}, {**data["judge"], "max_calls_per_hour": 0}):
        data["judge"] = judge
        with Conductor(settings_from_dict(data), seed=1, evaluators=[]) as c:
            for i in range(20):
                c.complete(f"Great value {i}", task_type="classify", strategy="direct-cheap")
            post = c.learner.posteriors["classify"]
            trials = post.quality_trials()[post.index["direct-cheap"]]
            assert trials == pytest.approx(20, rel=0.02), judge
