"""The demo workload and the demo world as an outcome table: what `conductor demo` routes
and what `conductor replay` replays when it is given no world. Deterministic under its
seed, built from the package's own data (``conductor/data/demo_world.toml`` for how the
simulated models behave, ``conductor/data/default.toml`` for their prices), so it runs on
a fresh clone with no download.
"""

from __future__ import annotations

import math

import numpy as np

from conductor.config import BatchStrategy, Settings
from conductor.providers.demo import DemoWorld
from conductor.replay.world import ModelOutcome, OutcomeRow
from conductor.types import estimate_tokens

# The reference workload's mix (DESIGN.md): classification, summaries, support, descriptions.
REFERENCE_MIX = {"classify": 0.4, "summarize": 0.3, "chat": 0.2, "generate_long": 0.1}
PRODUCTS = ("coffee grinder", "hiking backpack", "desk lamp", "phone case", "rice cooker",
            "running shoes", "wireless earbuds", "yoga mat", "kettle", "office chair")
# One easy and one hard phrasing per task type; the hard ones carry words the demo world
# makes hard for the cheap model (see conductor/data/demo_world.toml, [difficulty]).
PROMPTS = {
    "classify": ("Classify the sentiment of this review of the {p}: 'Arrived fast, works as "
                 "described, great value.'",
                 "Classify the sentiment of this sarcastic review of the {p}: 'Oh great, "
                 "although it broke twice it is clearly the best purchase of my life.'"),
    "summarize": ("Summarize these 12 reviews of the {p} in 3 sentences: customers like the "
                  "price and the fast delivery ...",
                  "Summarize the warranty clause and the legal terms of the {p} in 3 "
                  "sentences: the manufacturer however excludes ..."),
    "chat": ("My order of a {p} has not arrived and the tracking page shows no update since "
             "Monday.",
             "The firmware of my {p} fails the compatibility check with the technical "
             "specification; what does the warranty cover?"),
    "generate_long": ("Write a 500-word product description for a {p}.",
                      "Write a 500-word technical specification of the {p}, with the "
                      "regulation it must meet and its compatibility notes."),
}
HARD_SHARE = 0.3  # of prompts, hard for the cheap model


class DemoWorkload:
    """Draws (task type, prompt) from the reference mix, ``HARD_SHARE`` of them hard."""

    def __init__(self, tasks: list[str], seed: int) -> None:
        self.tasks = [t for t in REFERENCE_MIX if t in tasks]
        w = np.array([REFERENCE_MIX[t] for t in self.tasks])
        self.weights = w / w.sum()
        self.rng = np.random.default_rng([seed, 7])

    def next(self) -> tuple[str, str]:
        task = str(self.rng.choice(self.tasks, p=self.weights))
        template = PROMPTS[task][int(self.rng.random() < HARD_SHARE)]
        return task, template.format(p=PRODUCTS[int(self.rng.integers(len(PRODUCTS)))])


def demo_rows(world: DemoWorld, settings: Settings, n: int = 3000,
              seed: int = 0) -> list[OutcomeRow]:
    """``n`` prompts of the demo workload with every demo model's outcome (right or wrong,
    drawn from the world's quality for that prompt; cost from the settings' prices; latency
    from the world's speed), plus each cheap model run batched where a batch strategy
    exists (``<model>+batch``: the world's batch quality change, the strategy's discount)."""
    rng = np.random.default_rng([seed, 11])
    workload = DemoWorkload(list(REFERENCE_MIX), seed)
    batched = {st.model: st.batch.discount for st in settings.strategies.values()
               if isinstance(st, BatchStrategy) and st.model in world.models}
    rows = []
    for i in range(n):
        task, prompt = workload.next()
        hard = world.hard(prompt)
        tokens_in = estimate_tokens(prompt)
        mean_out = world.output_tokens.get(task, world.output_tokens.get("default", 200.0))
        outcomes = {}
        for name, prof in sorted(world.models.items()):
            if name not in settings.models:
                continue
            out = max(1, round(mean_out * math.exp(rng.normal(0.0, 0.3) - 0.045)))
            price = settings.models[name]
            latency = (prof.ttft_ms + 1000.0 * out / prof.tokens_per_s) * math.exp(
                rng.normal(0.0, prof.latency_sigma) - 0.5 * prof.latency_sigma ** 2)
            variants = [("", False, 1.0)]
            if name in batched:
                variants.append(("+batch", True, batched[name]))
            for suffix, is_batch, discount in variants:
                q = world.quality(name, task, is_batch, hard)
                outcomes[name + suffix] = ModelOutcome(
                    quality=float(rng.random() < q), output_tokens=out,
                    cost_usd=discount * price.cost_usd(tokens_in, out), latency_ms=latency)
        rows.append(OutcomeRow(id=f"demo-{i}", task_type=task, prompt=prompt,
                               input_tokens=tokens_in, outcomes=outcomes))
    return rows
