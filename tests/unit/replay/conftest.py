"""A small synthetic outcome table: three models, two task types."""

from __future__ import annotations

from pathlib import Path

import msgspec
import numpy as np
import pytest

# (quality on "easy", quality on "hard", cost per request)
MODELS = {"small": (0.90, 0.40, 0.001), "medium": (0.93, 0.75, 0.004),
          "large": (0.95, 0.85, 0.02)}


def write_world(path: Path, n: int = 600, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        task = "easy" if i % 3 else "hard"
        outcomes = {}
        for m, (qe, qh, cost) in MODELS.items():
            q = qe if task == "easy" else qh
            outcomes[m] = {"quality": float(rng.random() < q), "cost_usd": cost,
                           "output_tokens": 50}
        if i == 5:
            outcomes["large"]["quality"] = None  # unknown: not eligible for this prompt
        lines.append(msgspec.json.encode({"id": f"p{i}", "task_type": task, "prompt": "x",
                                          "outcomes": outcomes}))
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture
def world_file(tmp_path: Path) -> Path:
    return write_world(tmp_path / "world.jsonl")
