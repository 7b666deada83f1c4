"""The RouterBench replay behind benchmarks/RESULTS.md.

    .venv/bin/python benchmarks/replay.py [--seeds 5]

Runs `conductor replay` on ../shared/data/routerbench/*.csv (read in place, never copied)
with min_quality per task = 0.95 x the strongest model's accuracy there, writes
benchmarks/out/routerbench.json and the plots, and prints the table. Without RouterBench
(a fresh clone has no ../shared; README says where to get the CSVs) it replays the
built-in demo world and writes benchmarks/out/demo.json.
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
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
