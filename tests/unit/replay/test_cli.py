"""The offline commands end to end through the CLI, on small files made here."""

from __future__ import annotations

from pathlib import Path

import msgspec
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
    assert set(res) == {"strategy=turbo-cheap", "temperature=0.5", f"priors={priors}"}
    q = res["strategy=turbo-cheap"]["quality"]
    assert q["dr"]["low"] <= q["dr"]["value"] <= q["dr"]["high"]
    r = runner.invoke(main, ["compare", "--log-file", str(db), "--policy", "strategy=gpt-9"])
    assert r.exit_code == 2 and "unknown strategy 'gpt-9'" in r.output
    r = runner.invoke(main, ["tune", str(world_file), "--seeds", "1"])
    assert r.exit_code == 0, r.output
    assert r.output.count("<- recommended") == 2
    r = runner.invoke(main, ["tune", str(db)])  # logs: through off-policy estimates
    assert r.exit_code == 0, r.output
    assert r.output.count("<- recommended") == 4  # the demo's four task types


def test_replay_takes_per_task_floors_from_a_file(tmp_path: Path, world_file: Path) -> None:
    floors = tmp_path / "c.json"
    floors.write_text('{"hard": {"min_quality": 0.5}}')
    out = tmp_path / "r.json"
    r = CliRunner().invoke(main, ["replay", str(world_file), "--seeds", "1", "--constraints",
                                  str(floors), "--json", str(out)])
    assert r.exit_code == 0, r.output
    report = msgspec.json.decode(out.read_bytes())
    assert report["min_quality"]["hard"] == 0.5
    assert report["min_quality"]["easy"] > 0.8  # still from --quality-bar
    floors.write_text('{"poetry": {"min_quality": 0.5}}')
    bad = CliRunner().invoke(main, ["replay", str(world_file), "--constraints", str(floors)])
    assert bad.exit_code == 2 and "task type 'poetry' is not in the world" in bad.output
