"""The command line: output values, one-line errors, non-zero exits, documented commands."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from conductor.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_demo_shows_the_reference_deployments_shape() -> None:
    """A large saving against the default strategy, with every task type's quality target
    (95% of turbo-quality's quality) met; 30% of prompts are hard for the cheap model, so
    the saving builds over a few thousand requests."""
    result = CliRunner().invoke(main, ["demo", "--requests", "4000", "--every", "1000"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if re.match(r"\s+\d+\s+cost", ln)]
    assert [int(ln.split()[0]) for ln in lines] == [1000, 2000, 3000, 4000]
    saved = [int(m) for m in re.findall(r"\(\+?(-?\d+)% saved\)", result.output)]
    assert saved[0] < saved[-1] and saved[-1] > 40
    assert all(ln.split("per prompt ")[1].startswith("0%") for ln in lines)  # --per-task
    rows = {ln.split()[0]: ln.split() for ln in result.output.splitlines()
            if ln.split() and ln.split()[0] in ("classify", "summarize", "chat", "generate_long")}
    assert len(rows) == 4
    for task, (_, n, quality, target, met, _cost) in rows.items():
        assert int(n) > 100 and met == "yes", (task, rows[task])
        assert float(quality) >= float(target)


def test_demo_per_prompt_switches_to_the_prompts_words_once_they_predict_better() -> None:
    result = CliRunner().invoke(main, ["demo", "--requests", "3000", "--every", "500",
                                       "--per-prompt"])
    assert result.exit_code == 0, result.output
    shares = [int(m) for m in re.findall(r"per prompt (\d+)%", result.output)]
    # The task level first (the gate needs 50 scored rewards and a gain; the probes'
    # rewards count, so it opens within the first 500), then the prompt's words decide a
    # large share once they have paid.
    assert len(shares) == 6 and shares[0] < 25 and max(shares) > shares[0] + 20, shares


def test_bad_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text('[policy]\ndefault_strategy = "x"\n[strategies.a]\nmodel = "m"\n'
                   '[providers.p]\nkind = "demo"\n')
    result = CliRunner().invoke(main, ["demo", "--config", str(bad)])
    assert result.exit_code == 2
    assert result.output.strip().count("\n") == 0
    assert "strategies.a.model: unknown model 'm'" in result.output


def test_every_command_has_help_with_an_example_and_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    for name, cmd in main.commands.items():
        assert "Example:" in (cmd.help or ""), name
        assert f"`conductor {name}" in readme, f"conductor {name} is not documented"


def test_export_writes_one_line_per_request_with_decision_outcome_rewards(tmp_path: Path) -> None:
    import msgspec

    db = tmp_path / "demo.db"
    out = tmp_path / "traffic.jsonl"
    runner = CliRunner()
    assert runner.invoke(main, ["demo", "--requests", "40", "--db", str(db)]).exit_code == 0
    result = runner.invoke(main, ["export", "--db", str(db), "--out", str(out)])
    assert result.exit_code == 0, result.output
    lines = [msgspec.json.decode(ln) for ln in out.read_bytes().splitlines()]
    assert result.output.strip() == f"wrote {len(lines)} requests to {out}"
    # The demo's 40, and the probes made on them (logged as requests of their own).
    assert sum(rec["decision"]["routed_by"] != "probe" for rec in lines) == 40
    for rec in lines:
        assert rec["decision"]["request_id"] == rec["request_id"]
        assert 0 < rec["decision"]["propensity"] <= 1
        assert rec["outcome"]["strategy"] in {"turbo-cheap", "turbo-quality", "batch-cheap",
                                              "quality-verified"}
        assert "simulated" in [r["source"] for r in rec["rewards"]]
        assert rec["constraints"] == rec["decision"]["constraints"]
    later = runner.invoke(main, ["export", "--db", str(db), "--out", str(out),
                                 "--since", "2999-01-01"])
    assert later.output.strip() == f"wrote 0 requests to {out}"


def test_export_bad_input_is_one_line_and_non_zero(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(main, ["export", "--db", str(tmp_path / "x.db"), "--out", "o.jsonl"])
    assert missing.exit_code == 1 and "x.db: no such database" in missing.output
    garbage = tmp_path / "g.db"
    garbage.write_bytes(b"garbage" * 1000)
    bad = runner.invoke(main, ["export", "--db", str(garbage), "--out", "o.jsonl"])
    assert bad.exit_code == 1 and "g.db: not a usable SQLite database" in bad.output
    since = runner.invoke(main, ["export", "--db", str(garbage), "--out", "o.jsonl",
                                 "--since", "soon"])
    assert since.exit_code == 2 and "--since 'soon'" in since.output


def test_serve_with_a_bad_priors_file_is_one_line(tmp_path: Path) -> None:
    from importlib import resources

    text = resources.files("conductor.data").joinpath("default.toml").read_text("utf-8")
    assert "\n[policy]\n" in text
    cfg = tmp_path / "c.toml"
    cfg.write_text(text.replace("\n[policy]\n", f'\n[policy]\npriors = "{tmp_path}/no.json"\n'))
    r = CliRunner().invoke(main, ["serve", "--config", str(cfg), "--db", str(tmp_path / "c.db"),
                                  "--port", "1"])
    assert r.exit_code == 2 and r.output.strip().count("\n") == 0
    assert "policy.priors:" in r.output and "no.json" in r.output
