"""The router learning from a judge that is wrong, calibrated by sparse user labels.

A generated two-strategy world served through the real router (the model and the judge
are a fake OpenAI-compatible upstream over HTTP): the strong model answers right 86% of the
time, the cheap one 64%; the judge passes 30% of wrong answers and fails 5% of right ones;
users label 2% of the requests, 50 requests late. Judged as scored, the cheap model looks
0.72 and would be served too often for a target of 0.95 of the strong model's quality."""

from __future__ import annotations

import re
import sqlite3
import threading
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from conductor import Conductor
from conductor.cli import main as cli_main
from conductor.config import settings_from_dict
from conductor.service.app import create_app
from conductor.service.schemas import trace_of
from conductor.storage.sqlite import SQLiteStore
from conductor.testing import FakeUpstream
from conductor.types import Reward
from tests.integration.conftest import ServedApp, judged_chat_settings

RIGHT = {"strong": 0.86, "cheap": 0.64}
FALSE_POSITIVE, FALSE_NEGATIVE = 0.3, 0.05


def _settings(base_url: str, **policy: Any) -> Any:
    return judged_chat_settings(base_url, **policy)


class _World:
    """The upstream's answers (right or wrong, drawn per answer) and a lenient judge."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.lock = threading.Lock()

    def answer(self, body: dict[str, Any]) -> str:
        text = body["messages"][-1]["content"]
        if "strict grader" in body["messages"][0]["content"]:
            # The judge's coin is the request's own: the same whichever worker grades it.
            i = int(re.search(r"request (\d+)", text).group(1))  # type: ignore[union-attr]
            u = float(np.random.default_rng([self.seed, i]).random())
            right = "verdict=right" in text
            passed = u >= FALSE_NEGATIVE if right else u < FALSE_POSITIVE
            return "Score: 10" if passed else "Score: 1"
        with self.lock:
            u = float(self.rng.random())
        right = u < RIGHT[body["model"]]
        return f"verdict={'right' if right else 'wrong'}"


def _serve(c: Conductor, n: int, label_every: int | None, delay: int = 50) -> list[bool]:
    """n chat requests; every ``label_every``-th labelled by a user ``delay`` later.
    Returns whether each answer served was right."""
    truths: list[bool] = []
    due: list[tuple[int, str, bool]] = []
    for i in range(n):
        r = c.complete(f"request {i}", task_type="chat")
        truth = "verdict=right" in r.text
        truths.append(truth)
        if label_every and i % label_every == 0:
            due.append((i + delay, r.request_id, truth))
        while due and due[0][0] <= i:
            _, rid, label = due.pop(0)
            c.feedback(rid, thumbs=label, rater="user")
        assert c.wait_for_judges(60)  # judged before the next decision: load-independent
    for _, rid, label in due:  # the last ones too
        c.feedback(rid, thumbs=label, rater="user")
    assert c.wait_for_learning(60) and c.wait_for_judges(60)
    return truths


def _run(upstream: FakeUpstream, seed: int, path: Path, label_every: int | None
         ) -> tuple[dict[str, float], dict[str, tuple[float, float]], float]:
    """Serve 3,000 requests; per model the learned quality and (judged answers, their
    mean score as scored), and the true mean quality of the answers served."""
    upstream.behaviour.answer = _World(seed).answer
    # No probes: users label served answers only, and probing the cheap model instead of
    # serving it leaves fewer wrong answers with a label to pin the judge's false-positive
    # rate (with probes the median error over these six seeds was 0.054, without 0.041).
    with Conductor(_settings(upstream.base_url, probe_cost_ratio=0.0), seed=seed, evaluators=[],
                   log_store=SQLiteStore(path)) as c:
        truths = _serve(c, 3000, label_every=label_every)
        post = c.learner.posteriors["chat"]
        learned = {m: float(post.quality_mean()[post.index[f"direct-{m}"]]) for m in RIGHT}
        as_scored = post.judged_quality()
        judged = {m: (float(post.evidence["j_n"][post.index[f"direct-{m}"]]),
                      float(as_scored[post.index[f"direct-{m}"]])) for m in RIGHT}
        scale = c.stats().quality_scale["chat"]
    assert scale["scale"] == ("calibrated" if label_every else "judge")
    assert scale["user_labels"] == (3000 // label_every if label_every else 0)
    return learned, judged, float(np.mean(truths))


@pytest.mark.slow
def test_a_lenient_judge_with_two_percent_labels_is_calibrated_and_the_target_holds(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    """With 2% labels (60 over 3,000 requests) each strategy's learned quality centres on
    its true quality and the traffic served meets the target in true quality; judged as
    scored (no labels) the cheap model looks ~0.72 (0.64 x 0.95 + 0.36 x 0.3) and the
    target is met only on the judge's scale.

    Over seeds, not per seed: 60 labels hold 8-14 wrong answers, which pin the judge's
    false-positive rate to about +-0.12, so one estimate in five is 0.05-0.18 off (over
    three runs of this test; the replay's test of this world shows the same spread)."""
    errors, as_scored, served = [], [], []
    for seed in range(6):
        learned, judged, true_mean = _run(upstream, seed, tmp_path / f"{seed}.db", 50)
        assert judged["cheap"][0] >= 150  # the router explored it
        errors += [abs(learned[m] - RIGHT[m]) for m in RIGHT]
        as_scored.append(judged["cheap"][1] - RIGHT["cheap"])
        served.append(true_mean)
    print("calibration errors", np.round(errors, 3).tolist(), "cheap as scored, minus its "
          "truth", np.round(as_scored, 3).tolist(), "true quality served",
          np.round(served, 3).tolist())
    # The issue asks for 0.05 per strategy. Each answer is judged before the next decision
    # (``_serve``), so the run is the same on every machine: median 0.029 over the six
    # seeds, 12 of 12 within 0.08. (Waiting for the judges every 200 requests instead, the
    # median moved between 0.034 and 0.054 with the machine's load.)
    assert float(np.median(errors)) <= 0.05
    assert sum(e <= 0.08 for e in errors) >= 8
    assert np.mean(as_scored) >= 0.03  # what the labels correct: a lenient judge (0.076 expected)
    # The controller aims at the target on the calibrated scale, so the true quality
    # served lands on it give or take the calibration's error (0.82-0.83 over three runs
    # of this test against 0.817).
    assert np.mean(served) >= 0.95 * RIGHT["strong"] - 0.01


def test_judged_rewards_learned_before_the_labels_are_corrected_when_they_arrive(
        tmp_path: Path) -> None:
    """The same judged answers and the same user labels, learned through the router's
    learner in two orders: labels last (the calibration arrives after the judged rewards
    it corrects) and labels first. Both end in the same posterior, the same target sums
    and the same per-prompt model; and both sit at the true quality, not the judge's."""
    rng = np.random.default_rng(4)
    answers = []  # (request id, strategy, right, judge's score)
    for i in range(3000):
        m = "direct-strong" if i % 2 else "direct-cheap"
        right = rng.random() < (0.86 if m == "direct-strong" else 0.64)
        passed = rng.random() >= FALSE_NEGATIVE if right else rng.random() < FALSE_POSITIVE
        answers.append((f"r{i}", m, right, 1.0 if passed else 0.0))
    # 30% labelled, on both strategies: enough to pin the error rates to about +-0.03.
    labelled = [a for a in answers if int(a[0][1:]) % 10 in (0, 1, 2)]

    chosen = set(labelled)

    def learn(labels_first: bool) -> Conductor:
        # No decay: the two orders put each reward at another age.
        c = Conductor(_settings("http://127.0.0.1:9", half_life=None), seed=1, evaluators=[],
                      log_store=SQLiteStore(tmp_path / f"{labels_first}.db"))
        order = labelled + [a for a in answers if a not in chosen] if labels_first \
            else answers
        for rid, m, right, score in order:
            c.learner.add_reward(Reward(request_id=rid, source="judge", score=score,
                                        task_type="chat", strategy=m, created_at=1.0))
            if labels_first and (rid, m, right, score) in chosen:
                c.learner.add_reward(Reward(request_id=rid, source="user", rater="u",
                                            score=float(right), task_type="chat",
                                            strategy=m, created_at=1.0), wait=False)
        if not labels_first:
            for rid, m, right, _ in labelled:
                c.learner.add_reward(Reward(request_id=rid, source="user", rater="u",
                                            score=float(right), task_type="chat",
                                            strategy=m, created_at=1.0), wait=False)
        return c

    late, early = learn(False), learn(True)
    try:
        a, b = late.learner.posteriors["chat"], early.learner.posteriors["chat"]
        assert late.learner.rates.scale("chat") is not None
        assert np.allclose(a.quality_mean(), b.quality_mean(), atol=1e-9)
        ta, tb = late.learner.targets["chat"], early.learner.targets["chat"]
        assert ta.mean() == pytest.approx(tb.mean(), abs=1e-9)
        truth = {m: np.mean([r for _, s, r, _ in answers if s == m])
                 for m in ("direct-cheap", "direct-strong")}
        for m, q in truth.items():
            assert float(a.quality_mean()[a.index[m]]) == pytest.approx(q, abs=0.04), m
        served = float(np.mean([r for _, _, r, _ in answers]))
        assert ta.mean() == pytest.approx(served, abs=0.03)
        # As scored, the judged answers would have put the cheap strategy ~0.08 higher.
        raw = float(a.judged_quality()[a.index["direct-cheap"]])
        assert raw > truth["direct-cheap"] + 0.04
    finally:
        late.close()
        early.close()


def test_the_calibration_survives_a_restart_exactly(upstream: FakeUpstream,
                                                    tmp_path: Path) -> None:
    """Judged rewards, labels and the judge scale rebuilt from a snapshot, and from the
    log alone: the restarted router reads the same quality as the one that learned it."""
    world = _World(seed=5)
    upstream.behaviour.answer = world.answer
    path = tmp_path / "c.db"
    data = msgspec.to_builtins(_settings(upstream.base_url))
    data["judge"]["min_calibration_pairs"] = 10
    s = settings_from_dict(data)
    with Conductor(s, seed=2, evaluators=[], log_store=SQLiteStore(path)) as c:
        _serve(c, 400, label_every=10, delay=5)
        assert c.learner.rates.scale("chat") is not None
        rid = c.complete("request 400", task_type="chat").request_id
        assert c.wait_for_learning(30) and c.wait_for_judges(30)
        before = c.learner.posteriors["chat"].quality_mean().copy()
        target = c.learner.targets["chat"].mean()
    for from_log_only in (False, True):
        if from_log_only:
            with sqlite3.connect(path) as db:
                db.execute("DELETE FROM posterior_snapshots")
        again = Conductor(s, seed=2, evaluators=[], log_store=SQLiteStore(path))
        try:
            after = again.learner.posteriors["chat"].quality_mean()
            assert np.allclose(before, after, atol=1e-9), (from_log_only, before, after)
            assert again.learner.targets["chat"].mean() == pytest.approx(target, abs=1e-9)
            assert again.stats().quality_scale["chat"]["scale"] == "calibrated"
            decision = again.predict_only(again.make_request("request 9", task_type="chat"))
            assert decision.quality_scale == "calibrated"
            assert trace_of(decision).quality_scale == "calibrated"  # what HTTP answers
            rec = again.log_store.get_request(rid)
            assert rec is not None and rec.decision is not None
            assert rec.decision.quality_scale == "calibrated"  # as logged
        finally:
            again.close()
    # The service started on that log says so on /metrics too.
    with ServedApp(create_app(s, db_path=path)) as served:
        text = httpx.get(served.url + "/metrics").text
    samples = {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
               for f in text_string_to_metric_families(text) for smp in f.samples}
    assert samples[("conductor_quality_calibrated", (("task_type", "chat"),))] == 1.0
    fp = samples[("conductor_judge_error_rate",
                  (("kind", "false_positive"), ("task_type", "chat")))]
    assert 0.0 < fp < 1.0


def test_stats_say_which_scale_quality_is_learned_on(upstream: FakeUpstream) -> None:
    """With no user labels the judge's own scale is used, and /v1/stats says so."""
    world = _World(seed=1)
    upstream.behaviour.answer = world.answer
    with Conductor(_settings(upstream.base_url), seed=2, evaluators=[]) as c:
        _serve(c, 20, label_every=None)
        scale = c.stats().quality_scale["chat"]
        decision = c.predict_only(c.make_request("request 21", task_type="chat"))
    assert decision.quality_scale == "as_scored"
    assert scale["scale"] == "judge" and scale["user_labels"] == 0
    assert scale["judge_false_positive"] is None
    assert 0.0 <= scale["served_quality"] <= 1.0


def test_a_label_equal_to_the_judged_score_still_takes_its_place(tmp_path: Path) -> None:
    """A user's thumbs-up on an answer the judge passed changes no value, but the reward
    is now a label: it leaves the judged ones (which the error rates discount)."""
    path = tmp_path / "c.db"
    with Conductor(_settings("http://127.0.0.1:9"), seed=1, evaluators=[],
                   log_store=SQLiteStore(path)) as c:
        for source in ("judge", "user"):
            c.learner.add_reward(Reward(request_id="r1", source=source, score=1.0,
                                        rater="u" if source == "user" else "",
                                        task_type="chat", strategy="direct-cheap",
                                        created_at=1.0))
        post = c.learner.posteriors["chat"]
        i = post.index["direct-cheap"]
        assert (post.evidence["j_n"][i], post.evidence["q_s"][i]) == (0.0, 1.0)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT source, applied, previous_score, previous_source"
                          " FROM rewards ORDER BY seq").fetchall()
    assert rows == [("judge", 1, None, None), ("user", 1, 1.0, "judge")]


def test_a_judge_that_favours_its_own_model_is_calibrated_per_strategy(
        tmp_path: Path) -> None:
    """The judge is the strong model: it passes half of its own model's wrong answers
    and a tenth of the cheap model's. Once the labels show it (the two false-positive
    rates' intervals apart), each strategy's judged rewards are read through the rates
    measured on answers like its own (within 0.005 of the truth here), where one set of
    rates for the task type puts the strong model 0.04 high and the cheap one 0.03 low
    (the labels themselves, a fifth of the answers, hold both nearer the truth)."""
    rng = np.random.default_rng(8)
    fp = {"direct-strong": 0.5, "direct-cheap": 0.1}
    truth = {"direct-strong": 0.86, "direct-cheap": 0.64}
    right_of: dict[str, list[bool]] = {m: [] for m in truth}
    with Conductor(_settings("http://127.0.0.1:9", half_life=None), seed=1, evaluators=[],
                   log_store=SQLiteStore(tmp_path / "c.db")) as c:
        for i in range(3000):
            m = "direct-strong" if i % 2 else "direct-cheap"
            right = bool(rng.random() < truth[m])
            right_of[m].append(right)
            passed = rng.random() >= FALSE_NEGATIVE if right else rng.random() < fp[m]
            c.learner.add_reward(Reward(request_id=f"r{i}", source="judge",
                                        score=float(passed), task_type="chat", strategy=m,
                                        created_at=1.0))
            if i % 10 in (0, 1):  # 20% labelled
                c.learner.add_reward(Reward(request_id=f"r{i}", source="user", rater="u",
                                            score=float(right), task_type="chat",
                                            strategy=m, created_at=1.0), wait=False)
        learner = c.learner
        rates = learner.rates
        assert rates.self_graded("direct-strong") and not rates.self_graded("direct-cheap")
        assert rates.self_preference("chat")
        post = learner.posteriors["chat"]
        pooled = post.copy()  # what one scale for the task type would have read
        pooled.set_judge_scale(learner.rates.scale("chat"))
        for m in truth:
            i = post.index[m]
            err = abs(float(post.quality_mean()[i]) - np.mean(right_of[m]))
            pooled_err = abs(float(pooled.quality_mean()[i]) - np.mean(right_of[m]))
            assert err <= 0.03 and pooled_err >= err + 0.02, (m, err, pooled_err)
        report = c.stats().quality_scale["chat"]["self_preference"]
        assert report["shows"] and report["judge_model"] == "strong"
        assert report["own_model"]["false_positive"] == pytest.approx(0.5, abs=0.12)
        assert report["other_models"]["false_positive"] == pytest.approx(0.1, abs=0.06)
        stored = learner.state()
    # A restart reads the same pairs (with their strategies) and the same scales.
    again = Conductor(_settings("http://127.0.0.1:9", half_life=None), seed=1, evaluators=[],
                      log_store=SQLiteStore(tmp_path / "c.db"))
    try:
        assert again.learner.rates.self_preference("chat")
        assert np.allclose(again.learner.posteriors["chat"].quality_mean(),
                           post.quality_mean(), atol=1e-9)
        assert again.state()["tasks"] == stored["tasks"]
    finally:
        again.close()


@pytest.mark.parametrize("seed", [0, 1])
def test_a_strategy_not_yet_tried_is_priced_at_the_answers_seen(upstream: FakeUpstream,
                                                                seed: int) -> None:
    """Answers here are a few tokens long, against the task type's default expectation of
    256. A strategy not yet tried was priced at the default while a tried one was priced
    at its learned length, so the cheap model looked dearer than the strong one and, in
    these two seeds, was served twice in 1,500 requests. Its prior now starts from the
    lengths every strategy of the task type has produced."""
    upstream.behaviour.answer = _World(seed).answer
    with Conductor(_settings(upstream.base_url), seed=seed, evaluators=[]) as c:
        served = [c.complete(f"request {i}", task_type="chat").decision.strategy
                  for i in range(600)]
        post = c.learner.posteriors["chat"]
        tokens = post.output_tokens()
        tried = post.evidence["tok_n"]
    assert served.count("direct-cheap") >= 30, served.count("direct-cheap")
    assert tried[post.index["batch-cheap"]] == 0  # not eligible for chat: never tried
    assert tokens[post.index["batch-cheap"]] < 20  # yet priced near the answers seen


def test_calibrate_and_compare_read_logged_judged_rewards_as_the_router_does(
        upstream: FakeUpstream, tmp_path: Path) -> None:
    """A log of the lenient judge's world with 20% labels: the priors `calibrate` fits
    and the quality `compare` estimates for the logged policy are on the users' scale,
    where the judged rewards as logged are the judge's (the cheap model's ~0.08 high)."""
    from conductor.replay.logs import read_logged
    from conductor.replay.offline import (
        Candidate,
        _candidate_probabilities,
        calibrate,
        compare,
        judge_scales,
    )

    upstream.behaviour.answer = _World(3).answer
    path = tmp_path / "c.db"
    s = _settings(upstream.base_url)
    truths = []
    with Conductor(s, seed=3, evaluators=[], log_store=SQLiteStore(path)) as c:
        for i in range(1500):  # each model on half the requests, its client's choice
            r = c.complete(f"request {i}", task_type="chat",
                           strategy="direct-cheap" if i % 2 else "direct-strong")
            truths.append("verdict=right" in r.text)
            if i % 5 == 0:
                c.feedback(r.request_id, thumbs=truths[-1], rater="user")
        assert c.wait_for_learning(60) and c.wait_for_judges(60)
    records = read_logged(path)
    assert sum(r.judged for r in records) > 1000  # judged, not labelled: as scored
    assert all(judge_scales(records, s)["chat"].values())  # calibrated, one set of rates
    served = float(np.mean(truths))
    as_scored = float(np.mean([r.quality for r in records if r.quality is not None]))
    logged = compare(records, s, [], resamples=10)["logged"]["quality"]
    estimate = logged["ips"]["value"] if isinstance(logged, dict) else logged.ips.value
    assert abs(estimate - served) <= 0.025 < abs(as_scored - served) - 0.01, (
        estimate, served, as_scored)
    # A candidate that learns from the log as the router would: against an absolute
    # target of 0.7 the cheap model (0.64 true, ~0.72 as judged) needs the strong one
    # beside it for about a quarter of the traffic; on the judge's scale it would not.
    usable = [r for r in records if r.quality is not None and r.cost_usd is not None]
    pi = _candidate_probabilities(Candidate.parse("quality_target=0.7,temperature=0"),
                                  usable, s, list(s.strategies), 0, judge_scales(usable, s))
    strong_share = float(pi[-500:, list(s.strategies).index("direct-strong")].mean())
    assert 0.1 < strong_share < 0.4, strong_share
    # `conductor stats` says the same: as scored, and on the users' scale.
    config = tmp_path / "c.toml"
    config.write_text(f"""
[providers.fake]
kind = "openai"
base_url = "{upstream.base_url}"
[models.cheap]
provider = "fake"
input_usd_per_1m = 1.0
output_usd_per_1m = 2.0
[models.strong]
provider = "fake"
input_usd_per_1m = 10.0
output_usd_per_1m = 30.0
[strategies.direct-cheap]
model = "cheap"
[strategies.direct-strong]
model = "strong"
[judge]
strategy = "direct-strong"
[policy]
default_strategy = "direct-strong"
""")
    out = CliRunner().invoke(cli_main, ["stats", "--db", str(path), "--config", str(config)])
    assert out.exit_code == 0, out.output
    line = next(ln for ln in out.output.splitlines() if ln.startswith("quality chat"))
    scored, users = (float(x) for x in re.findall(r"(\d\.\d{3}) (?:over|on the users)", line))
    assert scored == pytest.approx(as_scored, abs=0.001), line
    assert users == pytest.approx(served, abs=0.025), line
    priors = calibrate(records, s)["priors"]["chat"]
    for m in ("direct-cheap", "direct-strong"):
        p = priors[m]
        truth = float(np.mean(truths[1::2] if m == "direct-cheap" else truths[0::2]))
        mean = p.quality_alpha / (p.quality_alpha + p.quality_beta)
        assert mean == pytest.approx(truth, abs=0.04), (m, mean, truth)


def test_per_prompt_models_fitted_from_a_log_stand_on_the_users_scale() -> None:
    """`calibrate`'s per-prompt models from a log whose rewards are mostly a lenient
    judge's: exported with the judged rewards read through the log's measured error
    rates, so a router that loads them (with no labels of its own yet) predicts the
    cheap model at its true 0.64 for these prompts, not the judge's ~0.72."""
    from conductor.bandit.context import ContextModel
    from conductor.replay.logs import LoggedRecord
    from conductor.replay.offline import fit_contexts_from_logs

    s = _settings("http://127.0.0.1:9", context=True)
    size = s.policy.context_dim + 1
    rng = np.random.default_rng(6)
    records, rights = [], []
    for i in range(4000):
        right = bool(rng.random() < RIGHT["cheap"])
        rights.append(right)
        passed = rng.random() >= FALSE_NEGATIVE if right else rng.random() < FALSE_POSITIVE
        labelled = i % 5 == 0
        records.append(LoggedRecord(
            request_id=str(i), created_at=float(i), task_type="chat", action="direct-cheap",
            propensity=1.0, routed_by="policy", min_quality=None, max_latency_ms=None,
            max_cost_usd=None, input_tokens=1, executed="direct-cheap",
            quality=float(right) if labelled else float(passed), cost_usd=1e-6,
            judge=float(passed), user=float(right) if labelled else None,
            judged=not labelled, features=tuple(rng.normal(size=size) * 0.1)))
    warm = fit_contexts_from_logs(records, {}, s, cap=5000.0)
    assert warm is not None
    saved = warm.tasks["chat"]
    assert not any(saved["jn"])  # folded into the rest
    model = ContextModel(list(s.strategies), size, prior_mean=np.full(4, 0.5),
                         prior_sd=np.full(4, 0.3))
    assert model.load(saved) == []
    predicted = float(model.predict_means(np.zeros((1, size)))[0, 0])
    truth = float(np.mean(rights))
    assert predicted == pytest.approx(truth, abs=0.03), (predicted, truth)


def test_the_offline_tools_split_a_self_preferring_judges_rates_as_the_router_does() -> None:
    """Logged pairs where the judge (the strong model) passes half of its own model's
    wrong answers and a tenth of the cheap one's: the log is read with a scale per
    strategy, as the Learner reads it live."""
    from conductor.replay.logs import LoggedRecord
    from conductor.replay.offline import judge_scales, true_quality

    s = _settings("http://127.0.0.1:9")
    rng = np.random.default_rng(2)
    fp = {"direct-strong": 0.5, "direct-cheap": 0.1}
    records = []
    for i in range(1200):
        m = "direct-strong" if i % 2 else "direct-cheap"
        right = bool(rng.random() < 0.7)
        passed = float(rng.random() >= FALSE_NEGATIVE if right else rng.random() < fp[m])
        records.append(LoggedRecord(
            request_id=str(i), created_at=float(i), task_type="chat", action=m,
            propensity=1.0, routed_by="forced", min_quality=None, max_latency_ms=None,
            max_cost_usd=None, input_tokens=1, executed=m, quality=passed, cost_usd=1e-6,
            judge=passed, user=float(right), judged=True))
    scales = judge_scales(records, s)["chat"]
    strong, cheap = scales["direct-strong"], scales["direct-cheap"]
    assert strong is not None and cheap is not None
    assert strong.fp == pytest.approx(0.5, abs=0.08) and cheap.fp == pytest.approx(0.1, abs=0.05)
    assert true_quality(records[1], judge_scales(records, s)) == pytest.approx(
        strong.item(records[1].quality or 0.0))
