"""The RouterBench replay behind benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/replay.py [--seeds 5] [--warm-start [--weight-cap 200]]

Runs `conductor replay` on ../shared/data/routerbench/*.csv (read in place, never copied)
with min_quality per task = 0.95 x the strongest model's accuracy there, writes
benchmarks/out/routerbench.json and the plots, and prints the table. Without RouterBench
(a fresh clone has no ../shared; README says where to get the CSVs) it replays the
built-in demo world and writes benchmarks/out/demo.json.

``--warm-start``: fit priors on the *_train.csv tables with `conductor calibrate`
(``--weight-cap``), then replay the *_test.csv tables twice, from flat priors and from
the fitted ones (benchmarks/out/routerbench-test-{cold,warm}.json).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from click.testing import CliRunner

from conductor.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quality-bar", type=float, default=0.95)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/routerbench")
    ap.add_argument("--warm-start", action="store_true")
    ap.add_argument("--weight-cap", type=float, default=200.0)
    args = ap.parse_args()
    if args.warm_start:
        warm_start(args)
        return
    files = sorted(str(p) for p in args.data.glob("*.csv"))
    name = "routerbench"
    if not files:
        print(f"no RouterBench CSVs under {args.data}: replaying the built-in demo world",
              file=sys.stderr)
        name = "demo"
    out = ROOT / "benchmarks/out"
    out.mkdir(parents=True, exist_ok=True)
    result = CliRunner().invoke(cli, ["replay", *files, "--seeds", str(args.seeds),
                                      "--quality-bar", str(args.quality_bar),
                                      "--json", str(out / f"{name}.json"),
                                      "--plots", str(out)])
    print(result.output)
    sys.exit(result.exit_code)


def warm_start(args: argparse.Namespace) -> None:
    train = sorted(str(p) for p in args.data.glob("*_train.csv"))
    test = sorted(str(p) for p in args.data.glob("*_test.csv"))
    if not train or not test:
        sys.exit(f"--warm-start needs RouterBench's *_train.csv and *_test.csv under {args.data}")
    out = ROOT / "benchmarks/out"
    out.mkdir(parents=True, exist_ok=True)
    priors = out / f"routerbench-train-priors-cap{args.weight_cap:g}.json"
    runner = CliRunner()
    fit = runner.invoke(cli, ["calibrate", *(a for f in train for a in ("--log-file", f)),
                              "--output", str(priors), "--weight-cap", str(args.weight_cap)])
    print(fit.output)
    if fit.exit_code:
        sys.exit(fit.exit_code)
    for label, extra in (("cold", []), ("warm", ["--priors", str(priors)])):
        print(f"== test split, {label} start ==")
        result = runner.invoke(cli, ["replay", *test, "--seeds", str(args.seeds),
                                     "--quality-bar", str(args.quality_bar), "--json",
                                     str(out / f"routerbench-test-{label}.json"), *extra])
        print(result.output)
        if result.exit_code:
            sys.exit(result.exit_code)


if __name__ == "__main__":
    main()
