"""The command line: output values, one-line errors, non-zero exits, documented commands."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from conductor.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_learning_progress_and_saves_cost() -> None:
    result = CliRunner().invoke(main, ["demo", "--requests", "300", "--every", "100"])
    assert result.exit_code == 0, result.output
    lines = [ln for ln in result.output.splitlines() if re.match(r"\s+\d+\s+cost", ln)]
    assert [int(ln.split()[0]) for ln in lines] == [100, 200, 300]
    saved = [int(m) for m in re.findall(r"\(\+?(-?\d+)% saved\)", result.output)]
    assert saved[-1] > 30  # the demo world's cheap model is good enough for most of the mix


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
