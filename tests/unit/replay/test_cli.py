"""The offline commands end to end through the CLI, on small files made here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from click.testing import CliRunner

from conductor.cli import main


def test_replay_writes_table_json_and_plots(tmp_path: Path, world_file: Path) -> None:
    out, plots = tmp_path / "r.json", tmp_path / "plots"
    r = CliRunner().invoke(main, ["replay", str(world_file), "--seeds", "2", "--json", str(out),
                                  "--plots", str(plots), "--judge-noise", "0.1"])
    assert r.exit_code == 0, r.output
    assert "best-fixed-per-task" in r.output and "AIQ" in r.output
    report = msgspec.json.decode(out.read_bytes())
    assert report["seeds"] == 2 and report["judge_noise"] == 0.1
    for name in ("conductor", "always:small", "random", "epsilon-greedy", "ucb1",
                 "best-fixed-per-task", "oracle"):
        o = report["policies"][name]["overall"]
        assert {"quality", "cost_usd", "quality_vs_strongest", "cost_vs_strongest",
                "regret"} <= set(o)
        assert set(report["policies"][name]["by_task"]) == {"easy", "hard"}
    assert "quality_std" in report["policies"]["conductor"]["overall"]
    assert (plots / "frontier.png").stat().st_size > 10_000
    assert (plots / "regret.png").stat().st_size > 10_000


def test_replay_bad_input_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n")
    r = CliRunner().invoke(main, ["replay", str(bad)])
    assert r.exit_code == 2 and "bad.jsonl:1" in r.output
    assert r.output.count("error:") == 1


def test_calibrate_compare_and_tune_on_a_logged_database(tmp_path: Path,
                                                         world_file: Path) -> None:
    runner = CliRunner()
    db = tmp_path / "demo.db"
    assert runner.invoke(main, ["demo", "--requests", "300", "--db", str(db)]).exit_code == 0
    priors = tmp_path / "priors.json"
    r = runner.invoke(main, ["calibrate", "--log-file", str(db), "--output", str(priors)])
    assert r.exit_code == 0, r.output
    assert "held-out log-likelihood" in r.output
    data = msgspec.json.decode(priors.read_bytes())
    assert "classify" in data["priors"] and "report" in data
    out = tmp_path / "ope.json"
    r = runner.invoke(main, ["compare", "--log-file", str(db), "--policy", "strategy=turbo-cheap",
                             "--policy", "temperature=0.5", "--policy", f"priors={priors}",
                             "--json", str(out)])
    assert r.exit_code == 0, r.output
    res = msgspec.json.decode(out.read_bytes())
    assert set(res) == {"logged", "strategy=turbo-cheap", "temperature=0.5", f"priors={priors}"}
    served = res["logged"]["quality"]  # what was served: every estimator is its plain mean
    assert served["ips"]["value"] == served["snips"]["value"] == served["dr"]["value"]
    q = res["strategy=turbo-cheap"]["quality"]
    assert q["dr"]["low"] <= q["dr"]["value"] <= q["dr"]["high"]
    r = runner.invoke(main, ["compare", "--log-file", str(db), "--policy", "strategy=gpt-9"])
    assert r.exit_code == 2 and "unknown strategy 'gpt-9'" in r.output
    r = runner.invoke(main, ["compare", "--log-file", str(db), "--policy", "context=maybe"])
    assert r.exit_code == 2 and "context must be true or false" in r.output
    r = runner.invoke(main, ["compare", "--log-file", str(db), "--policy", "quality_target=1.5"])
    assert r.exit_code == 2 and "quality_target must be in [0, 1]" in r.output
    # The config's [policy] priors is the candidates' starting point too: the same as
    # naming the file in the candidate.
    from importlib import resources
    text = resources.files("conductor.data").joinpath("default.toml").read_text("utf-8")
    cfg = tmp_path / "c.toml"
    cfg.write_text(text.replace("\n[policy]\n", f'\n[policy]\npriors = "{priors}"\n'))
    out2 = tmp_path / "ope2.json"
    r = runner.invoke(main, ["compare", "--log-file", str(db), "--config", str(cfg),
                             "--policy", "temperature=0.5", "--json", str(out2)])
    assert r.exit_code == 0, r.output
    via_config = msgspec.json.decode(out2.read_bytes())["temperature=0.5"]["quality"]["ips"]
    assert via_config["value"] == res[f"priors={priors}"]["quality"]["ips"]["value"]
    assert via_config["value"] != res["temperature=0.5"]["quality"]["ips"]["value"]
    r = runner.invoke(main, ["tune", str(world_file), "--seeds", "1"])
    assert r.exit_code == 0, r.output
    assert r.output.count("<- recommended") == 2
    assert "utility per request = quality - cost / (10 x the strongest" in r.output
    assert "warning:" not in r.output
    r = runner.invoke(main, ["tune", str(db)])  # logs: through off-policy estimates
    assert r.exit_code == 0, r.output
    assert r.output.count("<- recommended") == 4  # the demo's four task types
    assert "the logged mean cost" in r.output
    assert r.output.count("warning: ") == 4  # 300 requests over four task types: a guide
    assert "generate_long: 3" in r.output  # ~10% of 300, named with its count


def test_replay_takes_per_task_targets_and_floors_from_a_file(tmp_path: Path,
                                                              world_file: Path) -> None:
    """A task type's target and its per-request floor are different things: on "hard"
    (small right on 0.40, medium 0.75, large 0.85) a target of 0.5 lets Conductor serve it
    mostly cheap, a floor of 0.8 on each request's predicted quality does not."""
    def run(constraints: str) -> dict[str, Any]:
        f, out = tmp_path / "c.json", tmp_path / "r.json"
        f.write_text(constraints)
        r = CliRunner().invoke(main, ["replay", str(world_file), "--seeds", "1",
                                      "--constraints", str(f), "--json", str(out)])
        assert r.exit_code == 0, r.output
        return msgspec.json.decode(out.read_bytes())

    def hard_cost(report: dict[str, Any]) -> float:
        return float(report["policies"]["conductor"]["by_task"]["hard"]["cost_vs_strongest"])

    target = run('{"hard": {"quality_target": 0.5}}')
    assert target["targets"]["hard"] == 0.5 and target["min_quality"] == {}
    assert target["targets"]["easy"] > 0.8  # still from --quality-bar
    both = run('{"hard": {"quality_target": 0.5, "min_quality": 0.8}}')
    assert both["targets"]["hard"] == 0.5
    assert both["min_quality"] == {"hard": 0.8}
    assert hard_cost(target) < 0.4 < 0.7 < hard_cost(both)


def test_replay_constraints_file_names_what_is_wrong(tmp_path: Path,
                                                     world_file: Path) -> None:
    f = tmp_path / "c.json"
    for text, message in [
            ('{"poetry": {"min_quality": 0.5}}', "task type 'poetry' is not in the world"),
            ('{"hard": {"max_latency": 500}}', "unknown key(s) 'max_latency'"),
            ('{"hard": {"quality_target": 1.5}}', "hard.quality_target = 1.5 is not a quality")]:
        f.write_text(text)
        bad = CliRunner().invoke(main, ["replay", str(world_file), "--constraints", str(f)])
        assert bad.exit_code == 2 and message in bad.output, bad.output


def test_replay_restricted_to_the_models_a_deployment_would_configure(
        tmp_path: Path, world_file: Path) -> None:
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["replay", str(world_file), "--seeds", "1", "--models",
                                  "small, medium", "--json", str(out)])
    assert r.exit_code == 0, r.output
    report = msgspec.json.decode(out.read_bytes())
    singles = {p for p in report["policies"] if p.startswith("always:")}
    assert singles == {"always:small", "always:medium"}
    assert report["strongest_model"] == "medium"  # the bar: the strongest of those kept
    assert report["prompts"] == 600
    r = CliRunner().invoke(main, ["replay", str(world_file), "--seeds", "1", "--models",
                                  "large", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert msgspec.json.decode(out.read_bytes())["prompts"] == 599  # one it never answered
    r = CliRunner().invoke(main, ["replay", str(world_file), "--models", "small,gpt-9"])
    assert r.exit_code == 2 and r.output.count("error:") == 1
    assert "'gpt-9' not in the world; it has: large, medium, small" in r.output
    r = CliRunner().invoke(main, ["replay", str(world_file), "--models", " , "])
    assert r.exit_code == 2 and "error: name at least one model" in r.output


def test_replay_with_user_labels_reports_the_judges_errors_as_estimated(
        tmp_path: Path, world_file: Path) -> None:
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["replay", str(world_file), "--seeds", "2",
                                  "--judge-false-positive", "0.3", "--user-feedback-rate",
                                  "0.2", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "the judge's errors as Conductor estimated them from the labels (true: false " \
           "positives 0.30, false negatives 0.00" in r.output
    hard = msgspec.json.decode(out.read_bytes())["policies"]["conductor"]["by_task"]["hard"]
    # 20% of ~200 "hard" prompts, some answered wrong (fewer since probes: the cheap
    # model is probed, not served, while it is measured)
    assert hard["wrong_labels"] >= 3
    assert hard["judge_fp_90_low"] < hard["judge_fp_estimate"] < hard["judge_fp_90_high"]
    assert abs(hard["judge_fp_estimate"] - 0.3) < 0.25 and hard["judge_fn_estimate"] < 0.15
    r = CliRunner().invoke(main, ["replay", str(world_file), "--seeds", "1",
                                  "--judge-false-positive", "0.3", "--json", str(out)])
    assert r.exit_code == 0 and "as Conductor estimated them" not in r.output  # no labels
    # and no estimate in the JSON either: without labels it would be the prior's
    unlabelled = msgspec.json.decode(out.read_bytes())["policies"]["conductor"]["by_task"]
    assert not any("judge_fp_estimate" in o for o in unlabelled.values())


def test_replay_without_a_world_replays_the_built_in_demo_world(tmp_path: Path,
                                                                monkeypatch) -> None:
    """A fresh clone has no ../shared: the package's own demo world is the default."""
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["replay", "--seeds", "1", "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert "built-in demo world" in r.output and "AIQ" in r.output
    report = msgspec.json.decode(out.read_bytes())
    assert {"always:gpt-4o", "always:gpt-4o-mini", "always:gpt-4o-mini+batch",
            "conductor"} <= set(report["policies"])
    assert report["prompts"] == 3000
    c = report["policies"]["conductor"]["overall"]
    assert c["quality_vs_strongest"] >= 0.94 and c["cost_vs_strongest"] < 0.9
    assert "replaying: " in r.output  # progress lines without a terminal


def test_the_built_in_world_is_deterministic_and_follows_the_demo_world() -> None:
    import numpy as np

    from conductor.config import default_settings
    from conductor.providers.demo import load_world
    from conductor.replay.demo import demo_rows

    world = load_world("builtin")
    a = demo_rows(world, default_settings(), n=2000)
    assert a == demo_rows(world, default_settings(), n=2000)
    hard = np.array([world.hard(r.prompt) for r in a])
    mini = np.array([r.outcomes["gpt-4o-mini"].quality for r in a])
    strong = np.array([r.outcomes["gpt-4o"].quality for r in a])
    assert 0.25 < hard.mean() < 0.35
    assert mini[hard].mean() < mini[~hard].mean() - 0.25  # hard_prompt_delta -0.35
    assert abs(strong[hard].mean() - strong[~hard].mean()) < 0.08
    batched = [r.outcomes["gpt-4o-mini+batch"].cost_usd / r.outcomes["gpt-4o-mini"].cost_usd
               for r in a[:50]]
    assert np.allclose(batched, 0.5)  # batch-cheap's discount


def test_export_replays_calibrates_and_compares(tmp_path: Path) -> None:
    runner = CliRunner()
    db, jl = tmp_path / "d.db", tmp_path / "t.jsonl"
    assert runner.invoke(main, ["demo", "--requests", "300", "--db", str(db)]).exit_code == 0
    assert runner.invoke(main, ["export", "--db", str(db), "--out", str(jl)]).exit_code == 0
    from_db, from_export = tmp_path / "a.json", tmp_path / "b.json"
    r = runner.invoke(main, ["replay", str(jl), "--json", str(from_export)])
    assert r.exit_code == 0, r.output
    assert "logged traffic" in r.output and "temperature=0.5" in r.output
    assert runner.invoke(main, ["replay", str(db), "--json", str(from_db)]).exit_code == 0
    a, b = (msgspec.json.decode(p.read_bytes()) for p in (from_db, from_export))
    assert a == b  # the export carries everything the estimates use
    assert a["logged"]["used_records"] == 300
    assert {"strategy=turbo-cheap", "strategy=turbo-quality"} <= set(a)
    r = runner.invoke(main, ["calibrate", "--log-file", str(jl), "--output",
                             str(tmp_path / "p.json")])
    assert r.exit_code == 0 and "higher is better" in r.output, r.output
    r = runner.invoke(main, ["compare", "--log-file", str(jl), "--policy", "temperature=1"])
    assert r.exit_code == 0 and "logged" in r.output, r.output


def test_unwritable_outputs_fail_first_in_one_line(tmp_path: Path, world_file: Path) -> None:
    runner = CliRunner()
    db = tmp_path / "d.db"
    assert runner.invoke(main, ["demo", "--requests", "50", "--db", str(db)]).exit_code == 0
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [["replay", str(world_file), "--json", str(tmp_path / "no/such/r.json")],
             ["replay", str(world_file), "--plots", str(blocker / "plots")],
             ["calibrate", "--log-file", str(db), "--output", str(blocker / "p.json")],
             ["compare", "--log-file", str(db), "--policy", "random", "--json",
              str(tmp_path / "no/x.json")],
             ["export", "--db", str(db), "--out", str(tmp_path)]]
    for args in cases:
        r = runner.invoke(main, args)
        assert r.exit_code == 2, (args, r.output)
        lines = r.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, r.output)
        assert "replaying" not in r.output  # refused before the run


def test_serve_on_a_bad_database_path_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("not a database")
    for path, says in ((junk, "not a usable SQLite database"),
                       (tmp_path / "missing/dir/c.db", "is not a directory"),
                       (junk / "c.db", "is not a directory")):
        r = CliRunner().invoke(main, ["serve", "--db", str(path), "--port", "1"])
        assert r.exit_code == 1, r.output
        assert r.output.strip().count("\n") == 0 and says in r.output, r.output
        assert "Traceback" not in r.output
    assert junk.read_text() == "not a database"  # untouched


def _many_models_world(path: Path, n: int, seed: int) -> Path:
    """One task type, five cheap models that are mostly wrong, one cheap model that is
    good enough and a strong, dear one: the shape of RouterBench, where finding out which
    cheap models fail is most of what learning from scratch costs."""
    models = {**{f"weak{k}": (0.3, 0.001) for k in range(5)}, "good": (0.93, 0.002),
              "strong": (0.96, 0.05)}
    rng = np.random.default_rng(seed)
    lines = [msgspec.json.encode({
        "id": f"{path.stem}-{i}", "task_type": "qa", "prompt": "x",
        "outcomes": {m: {"quality": float(rng.random() < q), "cost_usd": c,
                         "output_tokens": 50} for m, (q, c) in models.items()}})
        for i in range(n)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_calibrated_priors_warm_start_the_replay(tmp_path: Path) -> None:
    # Priors fitted on two older tables (the option repeated) start Conductor where they
    # left off: on a new stream it does not pay again to find the weak models weak.
    old = [_many_models_world(tmp_path / f"old{k}.jsonl", 400, seed=10 + k) for k in range(2)]
    new = _many_models_world(tmp_path / "new.jsonl", 300, seed=3)
    priors, cold, warm = tmp_path / "p.json", tmp_path / "cold.json", tmp_path / "warm.json"
    runner = CliRunner()
    r = runner.invoke(main, ["calibrate", "--log-file", str(old[0]), "--log-file", str(old[1]),
                             "--output", str(priors), "--weight-cap", "200"])
    assert r.exit_code == 0, r.output
    result = msgspec.json.decode(priors.read_bytes())
    assert result["report"]["observations"]["qa/good"] == 800  # both tables' rows
    fitted = result["priors"]["qa"]
    assert fitted["good"]["quality_alpha"] + fitted["good"]["quality_beta"] == 200.0  # capped
    assert abs(fitted["good"]["quality_alpha"] / 200.0 - 0.93) < 0.03
    for out, extra in ((cold, []), (warm, ["--priors", str(priors)])):
        r = runner.invoke(main, ["replay", str(new), "--seeds", "3", "--json", str(out),
                                 *extra])
        assert r.exit_code == 0, r.output
    assert f"starts from the priors in {priors}" in r.output
    c = msgspec.json.decode(cold.read_bytes())["policies"]["conductor"]["overall"]
    w = msgspec.json.decode(warm.read_bytes())["policies"]["conductor"]["overall"]
    print("cold", c["quality_vs_strongest"], c["cost_vs_strongest"],
          "warm", w["quality_vs_strongest"], w["cost_vs_strongest"])
    # (A cold start probes the weak models rather than serving them since probes came:
    # 0.33 of the strongest's cost here, 0.42 before; warm, 0.17.)
    assert w["cost_vs_strongest"] < 0.6 * c["cost_vs_strongest"]
    assert w["quality_vs_strongest"] >= 0.95


def test_replay_priors_must_name_the_worlds_task_types_and_models(tmp_path: Path,
                                                                  world_file: Path) -> None:
    runner = CliRunner()
    priors = tmp_path / "p.json"
    assert runner.invoke(main, ["calibrate", "--log-file", str(world_file), "--output",
                                str(priors)]).exit_code == 0
    data = msgspec.json.decode(priors.read_bytes())
    data["priors"]["easy"]["gpt-9"] = data["priors"]["easy"]["small"]
    priors.write_bytes(msgspec.json.encode(data))
    r = runner.invoke(main, ["replay", str(world_file), "--priors", str(priors)])
    assert r.exit_code == 2 and "easy: model(s) gpt-9 are not in the world" in r.output
    assert r.output.count("error:") == 1
    del data["priors"]["easy"]["gpt-9"]
    data["priors"]["chat"] = data["priors"].pop("easy")
    priors.write_bytes(msgspec.json.encode(data))
    r = runner.invoke(main, ["replay", str(world_file), "--priors", str(priors)])
    assert r.exit_code == 2 and "task type 'chat' is not in the world" in r.output
    data["priors"]["easy"] = data["priors"].pop("chat")
    data["context"] = {"dim": "64"}
    priors.write_bytes(msgspec.json.encode(data))
    r = runner.invoke(main, ["replay", str(world_file), "--priors", str(priors)])
    assert r.exit_code == 2 and "its 'context' is not what conductor calibrate writes" in r.output
    db = tmp_path / "c.db"
    assert runner.invoke(main, ["demo", "--requests", "30", "--db", str(db)]).exit_code == 0
    r = runner.invoke(main, ["replay", str(db), "--priors", str(priors)])
    assert r.exit_code == 2 and "--priors applies to outcome tables" in r.output
    r = runner.invoke(main, ["replay", str(db), "--models", "small"])
    assert r.exit_code == 2 and "--models applies to outcome tables" in r.output
    r = runner.invoke(main, ["calibrate", "--log-file", str(db), "--log-file",
                             str(world_file), "--output", str(tmp_path / "q.json")])
    assert r.exit_code == 2 and "not several logs or both" in r.output


def _word_table(path: Path, n: int, seed: int) -> Path:
    """Whether the cheap model is right depends on the prompt's words: right on 97% of
    prompts about orders, 10% of those about mathematics; the strong one (46x the price)
    on 98% of both."""
    rng = np.random.default_rng(seed)
    easy_words, hard_words = ["refund", "order", "parcel"], ["eigenvalue", "theorem", "lemma"]
    lines = []
    for i in range(n):
        easy = bool(rng.random() < 0.7)
        words = [*(easy_words if easy else hard_words), "please", "help", "today"]
        rng.shuffle(words)
        lines.append(msgspec.json.encode({
            "id": f"{path.stem}-{i}", "task_type": "qa", "prompt": " ".join(words),
            "outcomes": {"strong": {"quality": float(rng.random() < 0.98), "cost_usd": 46e-6},
                         "cheap": {"quality": float(rng.random() < (0.97 if easy else 0.1)),
                                   "cost_usd": 1e-6}}}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_calibrate_warm_starts_per_prompt_routing_from_a_table_with_prompts(
        tmp_path: Path) -> None:
    old = [_word_table(tmp_path / f"old{k}.jsonl", 600, seed=20 + k) for k in range(2)]
    new = _word_table(tmp_path / "new.jsonl", 400, seed=4)
    priors = tmp_path / "p.json"
    runner = CliRunner()
    r = runner.invoke(main, ["calibrate", "--log-file", str(old[0]), "--log-file", str(old[1]),
                             "--output", str(priors), "--weight-cap", "500"])
    assert r.exit_code == 0, r.output
    context = msgspec.json.decode(priors.read_bytes())["context"]
    qa = context["tasks"]["qa"]
    assert qa["active"] is True  # the words predicted better than the task level
    assert qa["n"] == [500.0, 500.0]  # 1,200 rows each, capped
    out = {}
    for label, extra in (("cold", []), ("warm", ["--priors", str(priors)])):
        path = tmp_path / f"{label}.json"
        r = runner.invoke(main, ["replay", str(new), "--seeds", "2", "--json", str(path),
                                 *extra])
        assert r.exit_code == 0, r.output
        out[label] = msgspec.json.decode(path.read_bytes())["policies"]["conductor, per prompt"]
    cold, warm = out["cold"]["overall"], out["warm"]["overall"]
    print("cold", cold["quality_vs_strongest"], cold["cost_vs_strongest"],
          "warm", warm["quality_vs_strongest"], warm["cost_vs_strongest"])
    assert warm["quality_vs_strongest"] >= 0.95
    assert warm["cost_vs_strongest"] < 0.7 * cold["cost_vs_strongest"]


def test_calibrate_holds_out_a_random_part_of_several_tables(tmp_path: Path,
                                                              world_file: Path) -> None:
    # Tables have no order: the check's held-out rows come from both tables, not from the
    # tail of the last one (which here has only task type "qa").
    other = _many_models_world(tmp_path / "qa.jsonl", 300, seed=1)
    out = tmp_path / "p.json"
    r = CliRunner().invoke(main, ["calibrate", "--log-file", str(world_file), "--log-file",
                                  str(other), "--output", str(out)])
    assert r.exit_code == 0, r.output
    assert "a random 20% of the rows" in r.output
    report = msgspec.json.decode(out.read_bytes())["report"]
    assert report["holdout_task_types"] == ["easy", "hard", "qa"]



def test_replay_judge_rate_is_reported_and_charged(tmp_path: Path, world_file: Path) -> None:
    """At --judge-rate 0.1 the report says so, and a fixed model's answers (the same
    choices either way) pay the judge on about a tenth of them: judge cost 1 adds one
    cheapest answer's price (0.001) per judged answer."""
    def run(rate: str) -> dict[str, Any]:
        out = tmp_path / f"r{rate}.json"
        r = CliRunner().invoke(main, ["replay", str(world_file), "--seeds", "1",
                                      "--judge-cost", "1", "--judge-rate", rate,
                                      "--json", str(out)])
        assert r.exit_code == 0, r.output
        assert ("the judge scores 0.1 of answers" in r.output) == (rate == "0.1")
        return msgspec.json.decode(out.read_bytes())  # type: ignore[no-any-return]

    sampled, every = run("0.1"), run("1")
    assert sampled["judge_rate"] == 0.1 and every["judge_rate"] == 1.0
    cost = {name: r["policies"]["always:small"]["overall"]["cost_usd"]
            for name, r in (("sampled", sampled), ("every", every))}
    charge = cost["every"] - cost["sampled"]  # the judge on ~90% of 600 answers
    assert 0.7 * 600 * 0.9 * 0.001 < charge < 1.3 * 600 * 0.9 * 0.001, cost
    bad = CliRunner().invoke(main, ["replay", str(world_file), "--judge-rate", "0"])
    assert bad.exit_code == 2 and "--judge-rate" in bad.output
