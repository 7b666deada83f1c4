"""Outcome tables: a full-information world where every model's outcome on every prompt
is known. The replay harness reveals to a policy only the outcome of what it chose.

JSONL form, one prompt per line:
    {"id": str, "task_type": str, "prompt": str, "input_tokens": int?,
     "outcomes": {"<model>": {"quality": float|null, "cost_usd": float?,
                              "output_tokens": int?, "latency_ms": float?, "response": str?}}}
``quality`` null means unknown: that model is not eligible for that prompt. Missing
latencies are drawn from ``conductor/data/latency_profiles.toml``. RouterBench CSVs are
read by an adapter (ARC-Challenge and Winogrande -> classify, MBPP -> generate_long).
"""

from __future__ import annotations

import csv
import math
import tomllib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path

import msgspec
import numpy as np
from msgspec import Struct

from conductor.errors import InvalidRequestError
from conductor.types import estimate_tokens


class ModelOutcome(Struct, kw_only=True):
    quality: float | None = None
    cost_usd: float | None = None
    output_tokens: int | None = None
    latency_ms: float | None = None
    response: str | None = None


class OutcomeRow(Struct, kw_only=True):
    id: str
    task_type: str
    prompt: str = ""
    input_tokens: int | None = None
    outcomes: dict[str, ModelOutcome]


class World(Struct, kw_only=True):
    """Arrays over (prompt, model): quality (NaN = ineligible), cost and latency."""

    ids: list[str]
    task_types: list[str]
    models: list[str]
    quality: np.ndarray
    cost: np.ndarray
    latency_ms: np.ndarray
    prompts: list[str] = []  # what per-prompt routing reads
    # Answer lengths in tokens where the table records them (NaN: unknown): what a
    # length-biased judge reacts to. Empty when the world has none.
    output_tokens: np.ndarray = msgspec.field(default_factory=lambda: np.zeros((0, 0)))

    def tasks(self) -> list[str]:
        return sorted(set(self.task_types))

    def task_index(self, task: str) -> np.ndarray:
        return np.array([t == task for t in self.task_types])

    def restricted(self, models: list[str]) -> World:
        """The same prompts with only ``models`` (as a deployment that configures only
        them would see them); prompts none of them answered are dropped."""
        if not models:
            raise InvalidRequestError("name at least one model", field="models")
        unknown = [m for m in models if m not in self.models]
        if unknown:
            raise InvalidRequestError(
                f"model(s) {', '.join(map(repr, unknown))} not in the world; it has: "
                f"{', '.join(self.models)}", field="models")
        cols = np.array([self.models.index(m) for m in dict.fromkeys(models)], dtype=np.intp)
        rows = np.flatnonzero(~np.isnan(self.quality[:, cols]).all(axis=1))
        if not len(rows):
            raise InvalidRequestError("none of the prompts has an outcome of these models",
                                      field="models")
        return self.take(rows, cols)

    def take(self, rows: np.ndarray, cols: np.ndarray | None = None) -> World:
        """The prompts at ``rows`` (in that order), with the models at ``cols`` (all of
        them when None): every per-prompt field taken alike."""
        cols = np.arange(len(self.models)) if cols is None else cols
        grid = np.ix_(rows, cols)
        return World(ids=[self.ids[i] for i in rows],
                     task_types=[self.task_types[i] for i in rows],
                     models=[self.models[int(j)] for j in cols],
                     quality=self.quality[grid], cost=self.cost[grid],
                     latency_ms=self.latency_ms[grid],
                     prompts=[self.prompts[i] for i in rows] if self.prompts else [],
                     output_tokens=self.output_tokens[grid] if self.output_tokens.size
                     else self.output_tokens)


ROUTERBENCH_TASKS = {"arc-challenge": "classify", "winogrande": "classify",
                     "mbpp": "generate_long"}


def read_routerbench(path: str | Path) -> list[OutcomeRow]:
    """Rows of a RouterBench CSV (``M``, ``M|model_response``, ``M|total_cost``)."""
    csv.field_size_limit(1 << 30)
    rows: list[OutcomeRow] = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        fields = reader.fieldnames or []
        models = [f[:-len("|total_cost")] for f in fields if f.endswith("|total_cost")]
        if not models:
            raise InvalidRequestError(f"{path}: not a RouterBench CSV (no '<model>|total_cost' "
                                      "columns)", field="world")
        for r in reader:
            name = r.get("eval_name", "")
            task = next((t for k, t in ROUTERBENCH_TASKS.items() if name.startswith(k)), None)
            if task is None:
                task = "chat"
            outs = {}
            for m in models:
                q = r.get(m, "")
                resp = r.get(f"{m}|model_response") or ""
                cost = r.get(f"{m}|total_cost", "")
                outs[m] = ModelOutcome(
                    quality=float(q) if q not in ("", None) else None,
                    cost_usd=float(cost) if cost not in ("", None) else None,
                    output_tokens=estimate_tokens(resp) if resp else None, response=resp)
            prompt = r.get("prompt", "")
            rows.append(OutcomeRow(id=r.get("sample_id", ""), task_type=task, prompt=prompt,
                                   input_tokens=estimate_tokens(prompt), outcomes=outs))
    return rows


def read_outcome_table(path: str | Path) -> list[OutcomeRow]:
    """Rows of a JSONL outcome table; errors name the file and line."""
    dec = msgspec.json.Decoder(OutcomeRow)
    rows = []
    with Path(path).open("rb") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(dec.decode(line))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise InvalidRequestError(f"{path}:{i}: {exc}", field="world") from exc
    return rows


def read_rows(paths: Iterable[str | Path]) -> list[OutcomeRow]:
    """Rows from several files; RouterBench CSVs and JSONL tables may be mixed. A prompt id
    seen twice is kept once (the first)."""
    seen: set[str] = set()
    out: list[OutcomeRow] = []
    for p in paths:
        path = Path(p)
        if not path.exists():
            raise InvalidRequestError(f"{path}: no such file", field="world")
        rows = read_routerbench(path) if path.suffix == ".csv" else read_outcome_table(path)
        for r in rows:
            if r.id not in seen:
                seen.add(r.id)
                out.append(r)
    if not out:
        raise InvalidRequestError("the world has no prompts", field="world")
    return out


class LatencyProfiles:
    """Latency when a table records none: TTFT + tokens / speed, log-normal noise."""

    def __init__(self) -> None:
        text = resources.files("conductor.data").joinpath("latency_profiles.toml").read_text()
        data = tomllib.loads(text)
        self.classes: dict[str, dict[str, float]] = data["classes"]
        self.models: dict[str, str] = data["models"]

    def profile(self, model: str) -> dict[str, float]:
        m = model.lower()
        cls = next((c for key, c in self.models.items() if key in m), "medium")
        return self.classes[cls]

    def draw(self, model: str, output_tokens: float, rng: np.random.Generator) -> float:
        p = self.profile(model)
        s = p["sigma"]
        return (p["ttft_ms"] + 1000.0 * output_tokens / p["tokens_per_s"]) * math.exp(
            rng.normal(0.0, s) - s * s / 2)


def build_world(rows: list[OutcomeRow], prices: dict[str, tuple[float, float]] | None = None,
                seed: int = 0) -> World:
    """Arrays for the harness. Costs missing from the table come from tokens x prices
    (USD per 1M in/out); latencies missing are drawn once per cell, seeded."""
    models = sorted({m for r in rows for m in r.outcomes})
    n, k = len(rows), len(models)
    quality = np.full((n, k), np.nan)
    cost = np.full((n, k), np.nan)
    latency = np.full((n, k), np.nan)
    tokens = np.full((n, k), np.nan)
    profiles = LatencyProfiles()
    rng = np.random.default_rng(seed)
    for i, r in enumerate(rows):
        for j, m in enumerate(models):
            o = r.outcomes.get(m)
            if o is None or o.quality is None:
                continue
            quality[i, j] = min(1.0, max(0.0, o.quality))
            out_tokens = o.output_tokens if o.output_tokens is not None else (
                estimate_tokens(o.response) if o.response else 200)
            if o.output_tokens is not None or o.response:
                tokens[i, j] = out_tokens
            c = o.cost_usd
            if c is None and prices and m in prices:
                pin, pout = prices[m]
                c = ((r.input_tokens or estimate_tokens(r.prompt)) * pin + out_tokens * pout) / 1e6
            if c is None:
                raise InvalidRequestError(
                    f"prompt {r.id!r}, model {m!r}: no cost_usd and no price to compute it",
                    field="world")
            cost[i, j] = c
            latency[i, j] = o.latency_ms if o.latency_ms is not None else profiles.draw(
                m, out_tokens, rng)
    return World(ids=[r.id for r in rows], task_types=[r.task_type for r in rows],
                 models=models, quality=quality, cost=cost, latency_ms=latency,
                 prompts=[r.prompt for r in rows],
                 output_tokens=tokens if np.isfinite(tokens).any() else np.zeros((0, 0)))
