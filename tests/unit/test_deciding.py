"""Deciding: the trace a decision carries (explored, relaxed, predictions) and its
propensity, computed after the answer from the posterior the decision saw."""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from conductor import Conductor, default_settings
from conductor.config import ClientConfig
from conductor.errors import ConfigError


def _conductor(**policy: object) -> Conductor:
    s = default_settings()
    return Conductor(msgspec.structs.replace(s, policy=msgspec.structs.replace(
        s.policy, **policy)), seed=11, evaluators=[])


def test_explored_says_whether_the_choice_differs_from_the_greedy_one() -> None:
    c = _conductor()
    post = c.posteriors["summarize"]
    for _ in range(60):  # a clear favourite, measured past probe_trials: good enough
        post.observe_reward("turbo-cheap", 1.0)
    greedy = c.decider.policy.decide(post, c.decider.table, np.ones(4, dtype=bool),
                                     c.decider.effective_constraints(c.make_request(
                                         "x", task_type="summarize")), 10, 0.0, None)
    decisions = [c.predict_only(prompt="x", task_type="summarize") for _ in range(400)]
    names = c.decider.table.names
    assert all(d.explored == (d.strategy != names[greedy.index]) for d in decisions)
    assert 0 < sum(d.explored for d in decisions) < 400  # both happen


def test_forced_and_greedy_decisions_never_explore() -> None:
    c = _conductor(exploration={"chat": 0.0})
    assert not any(c.predict_only(prompt="x", task_type="chat").explored for _ in range(50))
    d = c.decide(c.make_request("x", task_type="chat"), strategy="batch-cheap")
    assert not d.explored and d.propensity == 1.0 and d.routed_by == "forced"


def test_constraint_relaxed_when_no_strategy_can_meet_the_constraints() -> None:
    c = _conductor()
    ok = c.predict_only(prompt="x", task_type="chat", min_quality=0.5, max_latency_ms=60_000)
    assert not ok.constraint_relaxed
    post = c.posteriors["chat"]
    for s in post.strategies:  # every strategy is known to be far below 0.99
        for _ in range(200):
            post.observe_reward(s, 0.0)
    for _ in range(20):
        post.observe_reward("turbo-quality", 1.0)  # the least hopeless
    d = c.predict_only(prompt="x", task_type="chat", min_quality=0.99)
    assert d.constraint_relaxed
    assert d.strategy == "turbo-quality"  # the one most likely to meet them


def test_predicted_latency_includes_the_batch_window() -> None:
    c = _conductor()
    d = c.decide(c.make_request("x", task_type="classify"), strategy="batch-cheap")
    post = c.posteriors["classify"]
    base = float(post.latency_mean_ms()[post.index["batch-cheap"]])
    assert d.predicted_latency_ms == pytest.approx(base + 200.0)  # window_ms = 200
    direct = c.decide(c.make_request("x", task_type="classify"), strategy="turbo-cheap")
    assert direct.predicted_latency_ms == pytest.approx(
        float(post.latency_mean_ms()[post.index["turbo-cheap"]]))


def test_the_logged_propensity_is_computed_on_the_posterior_the_decision_saw() -> None:
    """The answer goes before the propensity is computed; learning in between must not
    change it."""
    c = _conductor()
    req = c.make_request("x", task_type="summarize")
    decision, pending = c.decider.decide(req)
    assert decision.propensity is None and pending is not None
    expected = c.decider.with_propensity(decision, pending).propensity
    post = c.posteriors["summarize"]
    for _ in range(500):  # the live posterior moves a lot
        post.observe_reward("turbo-cheap", 0.0)
    later = c.decider.with_propensity(decision, pending).propensity
    assert later == pytest.approx(expected)  # exact product form: deterministic


def test_a_completed_request_carries_and_logs_its_propensity() -> None:
    c = _conductor()
    r = c.complete("Summarize: good", task_type="summarize")
    assert r.decision.propensity is not None and 0 < r.decision.propensity <= 1
    rec = c.log_store.get_request(r.request_id)
    assert rec is not None and rec.decision == r.decision


def _two_model_settings(world_toml: str, provider_seed: int, target: object,
                        **policy: object) -> object:
    """Two simulated models on a demo world (strong 46x the price of cheap)."""
    from conductor.config import settings_from_dict

    return settings_from_dict({
        "providers": {"sim": {"kind": "demo", "world": world_toml, "seed": provider_seed}},
        "models": {"strong": {"provider": "sim", "input_usd_per_1m": 46.0,
                              "output_usd_per_1m": 46.0},
                   "cheap": {"provider": "sim", "input_usd_per_1m": 1.0,
                             "output_usd_per_1m": 1.0}},
        "strategies": {"strong": {"model": "strong", "prior_quality": 0.5},
                       "cheap": {"model": "cheap", "prior_quality": 0.5}},
        "task_types": {"chat": {"quality_target": target}},
        "policy": {"default_strategy": "strong", "default_exploration": 0.5, **policy},
    })


def _two_model_conductor(tmp_path, target: object) -> Conductor:
    world = tmp_path / "world.toml"
    world.write_text(
        'judge_noise = 0.1\n'
        '[models.strong]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.86 }\n'
        '[models.cheap]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.64 }\n'
        '[output_tokens]\nchat = 20\n')
    return Conductor(_two_model_settings(str(world), 4, target), seed=4)


def test_a_forced_early_deficit_is_repaid_by_routing(tmp_path) -> None:
    c = _two_model_conductor(tmp_path, 0.817)
    for _ in range(200):  # an operator forces the cheap model for a while
        c.complete("hello", task_type="chat", strategy="cheap")
    window = c.learner.targets["chat"]
    assert window.mean() < 0.72
    decisions = []
    for _ in range(2500):
        decisions.append(c.complete("hello", task_type="chat").decision)
    assert window.mean() >= 0.817
    assert any(d.quality_target > 0.85 for d in decisions[:50])  # the target was raised
    assert any(d.strategy == "cheap" for d in decisions[-500:])  # and mixing resumed


def test_a_relative_target_follows_the_reference(tmp_path) -> None:
    c = _two_model_conductor(tmp_path, {"relative_to": "strong", "ratio": 0.95})
    for _ in range(1500):
        c.complete("hello", task_type="chat")
    assert c.target_of("chat") == pytest.approx(0.95 * 0.86, abs=0.03)
    assert c.learner.targets["chat"].mean() >= c.target_of("chat") - 0.01


def test_a_held_back_decision_says_so_and_serves_the_reference(tmp_path) -> None:
    # Early under a relative target, the mix often wants the cheap model before it is
    # known to keep the target: the conservative check serves the reference instead,
    # and the trace says so.
    c = _two_model_conductor(tmp_path, {"relative_to": "strong", "ratio": 0.95})
    decisions = [c.complete("hello", task_type="chat").decision for _ in range(300)]
    held = [d for d in decisions if d.held_back]
    assert held and all(d.strategy == d.policy_choice == "strong" for d in held)
    assert any(d.strategy == "cheap" for d in decisions)  # not everything is held back


def test_under_a_partial_rollout_the_propensity_mixes_in_the_default(tmp_path) -> None:
    # At 25%, a request reaches the policy with probability 0.25 and the default
    # strategy otherwise: P(strategy) = 0.25 P_policy(strategy) + 0.75 [it is the default].
    c = _two_model_conductor(tmp_path, None)  # no target: both strategies get chosen
    default = c.policy_settings().default_strategy
    c.update_policy("test", rollout_percent=25)
    req = c.make_request("x", task_type="chat")
    seen = {"default": [], "other": []}
    for _ in range(300):
        d = c.decide(req)
        seen["default" if d.strategy == default else "other"].append(d.propensity)
    assert seen["other"] and seen["default"]
    assert all(0.0 < p <= 0.25 + 1e-9 for p in seen["other"])
    assert all(0.75 - 1e-9 <= p <= 1.0 for p in seen["default"])
    # and they add up: the chosen strategies' propensities estimate how often each is
    # chosen (the default's share here is 0.75 + 0.25 P_policy(default))
    share = len(seen["default"]) / 300
    assert share == pytest.approx(float(np.mean(seen["default"])), abs=0.08)


def _per_prompt_conductor(tmp_path, store=None) -> Conductor:
    world = tmp_path / "words.toml"
    world.write_text(
        'judge_noise = 0.1\n[difficulty]\nhard_words = ["eigenvalue", "theorem", "lemma"]\n'
        '[models.strong]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.98 }\n'
        '[models.cheap]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.97 }\n'
        'hard_prompt_delta = -0.87\n[output_tokens]\nchat = 20\n')
    settings = _two_model_settings(str(world), 2, {"relative_to": "strong", "ratio": 0.97},
                                   context=True)
    return Conductor(msgspec.structs.replace(settings, storage=msgspec.structs.replace(
        settings.storage, snapshot_every_s=1e9)), seed=2, log_store=store)


def _prompt(rng: np.random.Generator) -> tuple[str, bool]:
    hard = bool(rng.random() < 0.3)
    words = ["eigenvalue theorem lemma proof" if hard else "refund my order parcel",
             "please", "help", "today"]
    rng.shuffle(words)
    return " ".join(words), hard


def test_per_prompt_decisions_learn_which_prompts_are_easy(tmp_path) -> None:
    c = _per_prompt_conductor(tmp_path)
    rng = np.random.default_rng(5)
    late = {True: [], False: []}
    for k in range(1500):
        text, hard = _prompt(rng)
        r = c.complete(text, task_type="chat")
        assert len(r.decision.features) == 65 and r.decision.propensity is not None
        if k >= 1000:
            late[hard].append((r.outcome.strategy == "cheap", r.decision.per_prompt))
    assert np.mean([p for _, p in late[False] + late[True]]) > 0.5  # decided per prompt
    assert np.mean([ch for ch, _ in late[False]]) > 0.7  # easy prompts go cheap
    assert np.mean([ch for ch, _ in late[True]]) < 0.2  # hard ones do not
    d = c.predict_only(prompt="refund my order parcel please", task_type="chat")
    if d.per_prompt:
        cheap = next(s for s in d.samples if s.strategy == "cheap")
        assert cheap.prompt_quality is not None and cheap.prompt_quality > 0.8


def test_the_contextual_posterior_rebuilt_from_snapshot_and_log_equals_the_live_one(
        tmp_path) -> None:
    from conductor.storage.sqlite import SQLiteStore

    path = tmp_path / "c.db"
    c = _per_prompt_conductor(tmp_path, SQLiteStore(path))
    rng = np.random.default_rng(9)
    for k in range(600):
        c.complete(_prompt(rng)[0], task_type="chat")
        if k == 300:
            c.snapshot()  # the rebuild starts here and replays the rest
    live = c.state()
    assert live["contexts"]["chat"]["seen"] > 500
    c.log_store.flush()
    rebuilt = _per_prompt_conductor(tmp_path, SQLiteStore(path))
    assert rebuilt.state()["contexts"] == live["contexts"]
    assert rebuilt.state()["tasks"] == live["tasks"]
    c.close()
    rebuilt.close()


def test_a_per_prompt_decisions_propensity_waits_for_the_answer(tmp_path) -> None:
    import asyncio

    c = _per_prompt_conductor(tmp_path)
    rng = np.random.default_rng(1)
    for _ in range(400):
        c.complete(_prompt(rng)[0], task_type="chat")
    req = c.make_request("refund my order parcel", task_type="chat")
    answered, learn = c._run(c.acomplete_then_learn(req))
    assert answered.decision.propensity is None  # the answer did not wait for it
    logged = learn().decision
    assert logged.propensity is not None and 0.0 < logged.propensity <= 1.0
    assert c.log_store.get_request(answered.request_id).decision == logged
    asyncio.set_event_loop(None)


def test_per_prompt_decisions_say_which_strategies_are_off_the_frontier(tmp_path) -> None:
    # A third model, dearer than the cheap one and worse on average: per prompt it is not a
    # candidate (its predictions may err high on some prompt), and the trace says why.
    from conductor.config import settings_from_dict

    world = tmp_path / "words.toml"
    world.write_text(
        'judge_noise = 0.1\n[difficulty]\nhard_words = ["eigenvalue", "theorem", "lemma"]\n'
        '[models.strong]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.98 }\n'
        '[models.cheap]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.97 }\n'
        'hard_prompt_delta = -0.87\n'
        '[models.middling]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.5 }\n'
        '[output_tokens]\nchat = 20\n')
    prices = {"strong": 46.0, "cheap": 1.0, "middling": 20.0}
    settings = settings_from_dict({
        "providers": {"sim": {"kind": "demo", "world": str(world), "seed": 2}},
        "models": {m: {"provider": "sim", "input_usd_per_1m": p, "output_usd_per_1m": p}
                   for m, p in prices.items()},
        "strategies": {m: {"model": m, "prior_quality": 0.5} for m in prices},
        "task_types": {"chat": {"quality_target": {"relative_to": "strong", "ratio": 0.97}}},
        "policy": {"default_strategy": "strong", "default_exploration": 0.5, "context": True},
    })
    c = Conductor(settings, seed=2)
    rng = np.random.default_rng(5)
    per_prompt = []
    for k in range(1500):
        d = c.complete(_prompt(rng)[0], task_type="chat").decision
        if k >= 1000 and d.per_prompt:
            per_prompt.append(d)
    assert len(per_prompt) > 250
    reason = "per prompt: under the task type's cost-quality frontier"
    assert all(d.set_aside.get("middling") == reason for d in per_prompt)
    assert all(d.strategy != "middling" for d in per_prompt)
    assert all(0.0 < (d.propensity or 0.0) <= 1.0 for d in per_prompt)


def test_serve_starts_per_prompt_routing_from_calibrated_models(tmp_path) -> None:
    # `conductor calibrate` on an outcome table with prompts fits the per-prompt models;
    # `[policy] priors` starts the router from them: easy prompts go cheap from the first
    # requests, where a cold start spends its first hundreds learning the words.
    from click.testing import CliRunner

    from conductor.cli import main

    rng = np.random.default_rng(8)
    lines = []
    for i in range(1500):
        text, hard = _prompt(rng)
        lines.append(msgspec.json.encode({
            "id": f"t{i}", "task_type": "chat", "prompt": text,
            "outcomes": {"strong": {"quality": float(rng.random() < 0.98), "cost_usd": 46e-6},
                         "cheap": {"quality": float(rng.random() < (0.1 if hard else 0.97)),
                                   "cost_usd": 1e-6}}}))
    table, priors = tmp_path / "table.jsonl", tmp_path / "priors.json"
    table.write_bytes(b"\n".join(lines) + b"\n")
    r = CliRunner().invoke(main, ["calibrate", "--log-file", str(table), "--output",
                                  str(priors), "--weight-cap", "500"])
    assert r.exit_code == 0, r.output
    cold, warm = _per_prompt_conductor(tmp_path), _per_prompt_conductor(tmp_path)
    warm = Conductor(msgspec.structs.replace(warm.settings, policy=msgspec.structs.replace(
        warm.settings.policy, priors=str(priors))), seed=2)
    assert warm.learner.contexts["chat"].active and not cold.learner.contexts["chat"].active
    assert warm.learner.contexts["chat"].n.tolist() == [500.0, 500.0]
    shares = {}
    for name, c in (("cold", cold), ("warm", warm)):
        rng = np.random.default_rng(6)
        easy_cheap = []
        for _ in range(200):
            text, hard = _prompt(rng)
            if not hard:
                easy_cheap.append(c.complete(text, task_type="chat").outcome.strategy == "cheap")
            else:
                c.complete(text, task_type="chat")
        shares[name] = float(np.mean(easy_cheap))
    print(shares)
    assert shares["warm"] > 0.8 and shares["warm"] > shares["cold"] + 0.2
    bad = msgspec.structs.replace(warm.settings, policy=msgspec.structs.replace(
        warm.settings.policy, context_dim=32))
    with pytest.raises(ConfigError, match="fitted with context_dim 64"):
        Conductor(bad)


def _served_per_prompt(tmp_path):
    """1,500 requests served per prompt on the word world, logged to a SQLite file."""
    from conductor.storage.sqlite import SQLiteStore

    db = tmp_path / "served.db"
    served = _per_prompt_conductor(tmp_path, SQLiteStore(db))
    rng = np.random.default_rng(12)
    for _ in range(1500):
        served.complete(_prompt(rng)[0], task_type="chat")
    served.close()
    return db, served


def test_calibrate_fits_the_per_prompt_models_from_logged_traffic(tmp_path) -> None:
    # Traffic served per prompt logs each prompt's features; calibrate learns the per-prompt
    # models from it (each request teaches the strategy that served it), and a new router
    # started from that file sends easy prompts cheap from its first requests.
    from conductor.replay.logs import read_logged
    from conductor.replay.offline import calibrate, write_priors

    db, served = _served_per_prompt(tmp_path)
    result = calibrate(read_logged(db), served.settings, cap=300)
    chat = result["context"].tasks["chat"]
    assert max(chat["n"]) == 300.0 and sum(chat["n"]) > 300.0  # capped; both strategies
    priors = tmp_path / "priors.json"
    write_priors(result, priors)
    settings = served.settings
    warm = Conductor(msgspec.structs.replace(settings, policy=msgspec.structs.replace(
        settings.policy, priors=str(priors))), seed=3)
    model = warm.learner.contexts["chat"]
    cheap = model.index["cheap"]
    easy = model.predict(warm.decider.featurizer("refund my order parcel please help"))[0]
    hard = model.predict(warm.decider.featurizer("eigenvalue theorem lemma proof please"))[0]
    print("cheap predicted on an easy prompt", easy[cheap], "on a hard one", hard[cheap],
          "active", model.active)
    assert easy[cheap] > 0.8 and hard[cheap] < easy[cheap] - 0.3
    shares = {}
    for name, c in (("warm", warm), ("cold", _per_prompt_conductor(tmp_path))):
        rng = np.random.default_rng(6)
        easy_cheap = []
        for _ in range(150):
            text, is_hard = _prompt(rng)
            strategy = c.complete(text, task_type="chat").outcome.strategy
            if not is_hard:
                easy_cheap.append(strategy == "cheap")
        shares[name] = float(np.mean(easy_cheap))
    print("easy prompts served cheap in the first 150:", shares)
    assert shares["warm"] > 0.7 and shares["warm"] > shares["cold"] + 0.3


def test_compare_evaluates_a_per_prompt_candidate_on_the_logged_features(tmp_path) -> None:
    # Off the log of per-prompt traffic, a per-prompt candidate (it learns the contextual
    # models from the log as the router did) is estimated to keep quality that the same
    # policy deciding per task type loses: on hard prompts the cheap model fails.
    from conductor.replay.logs import read_logged
    from conductor.replay.offline import Candidate, compare

    db, served = _served_per_prompt(tmp_path)
    specs = ["temperature=0.5", "temperature=0.5,context=true"]
    res = compare(read_logged(db), served.settings, [Candidate.parse(s) for s in specs],
                  resamples=200)
    task_level, per_prompt = (res[s]["quality"].snips.value for s in specs)
    logged = res["logged"]["quality"].snips.value
    print("estimated quality: logged", logged, "task level", task_level,
          "per prompt", per_prompt)
    assert per_prompt > task_level + 0.02
    assert abs(per_prompt - logged) < 0.05  # it is, near enough, the policy that logged


def test_compare_decides_under_the_configured_quality_target(tmp_path) -> None:
    # Traffic served under a relative target mixes the cheap model in; a candidate equal to
    # the live policy, evaluated on that log, decides under the same target with its own
    # controller following the logged rewards, so its probabilities are the logged
    # propensities (importance weights ~1): the estimate is the logged mean, from nearly
    # every record. Evaluated with the no-target rule it would put its weight elsewhere.
    from conductor.replay.logs import read_logged
    from conductor.replay.offline import Candidate, compare
    from conductor.storage.sqlite import SQLiteStore

    world = tmp_path / "world.toml"
    world.write_text(
        '[models.strong]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.86 }\n'
        '[models.cheap]\nttft_ms = 300\ntokens_per_s = 100\nquality = { chat = 0.64 }\n'
        '[output_tokens]\nchat = 20\n')
    db = tmp_path / "target.db"
    settings = _two_model_settings(str(world), 4, {"relative_to": "strong", "ratio": 0.95})
    served = Conductor(settings, seed=4, log_store=SQLiteStore(db))
    strategies = [served.complete("hello", task_type="chat").outcome.strategy
                  for _ in range(600)]
    served.close()
    cheap_share = strategies[300:].count("cheap") / 300
    assert 0.05 < cheap_share < 0.5  # a mix, not one strategy
    records = read_logged(db)
    res = compare(records, settings, [Candidate.parse("temperature=0.5"),
                                      Candidate.parse("temperature=0.5,quality_target=0.6")],
                  resamples=200)
    live, lower = res["temperature=0.5"], res["temperature=0.5,quality_target=0.6"]
    logged = res["logged"]
    n = live["used_records"]
    print("ess", live["quality"].ess, "of", n, "max weight", live["quality"].max_weight,
          "quality", live["quality"].snips.value, "logged", logged["quality"].snips.value,
          "cost", live["cost_usd"].snips.value, "lower target's cost",
          lower["cost_usd"].snips.value)
    assert live["quality"].ess > 0.95 * n
    assert abs(live["quality"].snips.value - logged["quality"].snips.value) < 0.01
    # A target the cheap model meets alone: estimated cheaper than what was served.
    assert lower["cost_usd"].dr.value < 0.5 * logged["cost_usd"].dr.value


def _acme_settings(tmp_path, acme_target: float) -> object:
    """The two-model world with the task type's target at 0.6, and a client "acme" whose
    own target for chat is ``acme_target``."""
    world = tmp_path / "world.toml"
    world.write_text('[models.strong]\nttft_ms = 300\ntokens_per_s = 100\n'
                     'quality = { chat = 0.86 }\n[models.cheap]\nttft_ms = 300\n'
                     'tokens_per_s = 100\nquality = { chat = 0.64 }\n[output_tokens]\nchat = 20\n')
    settings = _two_model_settings(str(world), 4, 0.6)
    return msgspec.structs.replace(settings, clients={
        **settings.clients, "acme": ClientConfig(quality_targets={"chat": acme_target})})


def test_a_client_or_request_may_only_make_the_target_stricter(tmp_path) -> None:
    # The task type's target is 0.6; a request's own target and its client's apply when
    # stricter, never when laxer. The trace's target is the one the mix was solved for
    # (the margin added; nothing served yet, so the controller has not moved it).
    settings = _acme_settings(tmp_path, 0.75)
    c = Conductor(settings, seed=4)
    margin = settings.policy.target_margin

    def target(**kw: object) -> float:
        return c.decide(c.make_request("x", task_type="chat", **kw)).quality_target

    assert target() == pytest.approx(0.6 + margin)
    assert target(quality_target=0.8) == pytest.approx(0.8 + margin)
    assert target(quality_target=0.5) == pytest.approx(0.6 + margin)
    assert target(client_id="acme") == pytest.approx(0.75 + margin)
    assert target(client_id="acme", quality_target=0.7) == pytest.approx(0.75 + margin)
    assert target(client_id="acme", quality_target=0.9) == pytest.approx(0.9 + margin)


def test_compare_decides_under_the_logged_request_and_client_targets(tmp_path) -> None:
    # Served under requests' own stricter target (0.8 where the task type says 0.6), the
    # traffic mixes in the strong model; a candidate equal to the live policy must decide
    # under the same logged targets to find its probabilities equal to the logged ones.
    from conductor.replay.logs import read_logged
    from conductor.replay.offline import Candidate, compare
    from conductor.storage.sqlite import SQLiteStore

    settings = _acme_settings(tmp_path, 0.8)
    db = tmp_path / "hinted.db"
    served = Conductor(settings, seed=4, log_store=SQLiteStore(db))
    for i in range(400):  # half by a client with its own target, half with a request's
        if i % 2:
            served.complete("hello", task_type="chat", client_id="acme")
        else:
            served.complete("hello", task_type="chat", quality_target=0.8)
    served.close()
    records = read_logged(db)
    assert {r.client_id for r in records} == {"acme", "default"}
    assert {r.quality_target for r in records} == {None, 0.8}
    live = compare(records, settings, [Candidate.parse("temperature=0.5")],
                   resamples=50)["temperature=0.5"]
    print("ess", live["quality"].ess, "of", live["used_records"])
    assert live["quality"].ess > 0.95 * live["used_records"]


def test_the_logged_propensity_draws_only_until_the_chosen_strategy_is_precise(
        tmp_path) -> None:
    # Under a target the log's propensity is the chosen strategy's probability, drawn 100
    # at a time until it is precise: here fewer draws than the 1,000 a whole vector takes.
    c = _two_model_conductor(tmp_path, 0.6)  # the cheap model (0.64) keeps it alone
    for _ in range(300):
        c.complete("hello", task_type="chat")
    d = c.decider
    decision, pending = d.decide(c.make_request("x", task_type="chat"))
    assert pending is not None and pending.target is not None
    state = d.propensity_rng.bit_generator.state
    logged = d.with_propensity(decision, pending).propensity
    used = d.propensity_rng.bit_generator.state
    replay = np.random.default_rng()
    replay.bit_generator.state = state
    chunks = 0
    while replay.bit_generator.state != used and chunks < 40:  # one chunk of 100 a call
        d.policy.choice_probabilities(pending.post, d.table, pending.eligible,
                                      pending.constraints, pending.input_tokens,
                                      pending.temperature, replay, draws=100,
                                      target=pending.target)
        chunks += 1
    print("propensity", logged, "chunks of 100", chunks)
    assert replay.bit_generator.state == used and 1 <= chunks < 10
    assert 0.0 < logged <= 1.0


def test_only_what_the_policy_routes_itself_is_probed() -> None:
    """A probe runs beside what the policy served. In shadow mode (dry run) the default
    strategy answers whatever the policy chose, and a forced strategy is the caller's
    choice: neither names a probe, though the policy's draws would."""
    live = _conductor()
    assert sum(live.predict_only(prompt="x", task_type="classify").probe is not None
               for _ in range(50)) > 10  # the cheap strategies start thin
    s = default_settings()
    dry = Conductor(s, seed=11, evaluators=[], dry_run=True)
    decisions = [dry.predict_only(prompt="x", task_type="classify") for _ in range(50)]
    assert all(d.routed_by == "shadow" and d.probe is None for d in decisions)
    forced = live.decide(live.make_request("x", task_type="classify"), strategy="turbo-cheap")
    assert forced.probe is None and forced.strategy == "turbo-cheap"
