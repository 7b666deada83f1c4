"""How often does the policy starve the right strategy? 200 seeds, with and without the guard.

World (issue: core policy): qualities 0.95 / 0.90 / 0.70 as Bernoulli rewards, costs 10 / 2 / 1,
flat priors, 2,000 requests. "Starved" = the right strategy got under 60% of the last 500
decisions (with min_quality 0.85 it is the 0.90 one; with 0.93, the 0.95 one).

    .venv/bin/python benchmarks/starvation.py [--seeds 200]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from conductor.bandit.policy import PolicyParams
from conductor.bandit.simulate import run_bernoulli_world
from conductor.types import Constraints


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=200)
    ap.add_argument("--guard-floor", type=float, default=PolicyParams().guard_floor)
    args = ap.parse_args()
    print(f"guard floor {args.guard_floor:g} (a strategy is not 'wide' once its chance of "
          "meeting the floor is under this)")
    print(f"{'guard (trials)':>14} {'min_quality':>11} {'mean share':>10} {'starved':>9}")
    for guard in (0.0, 20.0, 40.0):
        for bar, target in ((0.85, 1), (0.93, 0)):
            t0 = time.perf_counter()
            shares = np.array([
                np.mean(run_bernoulli_world((0.95, 0.90, 0.70), (10.0, 2.0, 1.0),
                                            Constraints(min_quality=bar), seed,
                                            params=PolicyParams(wide_posterior_trials=guard,
                                                                guard_floor=args.guard_floor))
                        [-500:] == target)
                for seed in range(args.seeds)])
            starved = int((shares < 0.6).sum())
            print(f"{guard:>14.0f} {bar:>11.2f} {shares.mean():>10.3f} "
                  f"{starved:>4}/{args.seeds} ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
