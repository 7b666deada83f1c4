"""The demo provider: a simulated world of models that answers with labelled simulated text.

Driven by ``conductor/data/demo_world.toml`` (per-model quality per task type, latency
profile, output tokens). Each answer also carries its simulated quality, which the
``SimulatedQualityEvaluator`` feeds back as a reward, so the policy learns with no judge.
Deterministic under the provider's seed for a given sequence of calls.

It is also a judge: asked to grade (the judge's "REQUEST: ... ANSWER: ..." prompt), a demo
model reads the answer as a judge would, sees whether it is right (a wrong demo answer is a
wrong label, broken JSON, or an off-topic text), and replies "Score: N" with noise. Nothing
outside this module knows that the world is simulated.
"""

from __future__ import annotations

import asyncio
import math
import re
import tomllib
from collections.abc import AsyncIterator
from importlib import resources
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
from msgspec import Struct

from conductor.errors import ConfigError, ProviderBadRequestError
from conductor.providers.base import ProviderCall, ProviderResponse, StreamChunk
from conductor.providers.batching import BATCH_FRAMING_OUT_TOKENS
from conductor.types import Message, estimate_prompt_tokens

_FILLER = ("the order shipped on time and the product matches its description; customers "
          "mention quality, price and delivery in most reviews of this item")


_SENTIMENTS = ["positive", "negative", "neutral"]
_OFF_TOPIC = "off-topic"
_GRADING = re.compile(r"REQUEST:\n(?P<request>.*)\n\nANSWER:\n(?P<answer>.*)\n\nScore:\s*$", re.S)

_NEGATIVE = ("broken", "bad", "terrible", "awful", "late", "refund", "worst", "poor",
             "never", "disappoint", "damaged", "not ", "n't")
_POSITIVE = ("great", "good", "love", "excellent", "perfect", "fast", "works", "happy")


def _guess_label(text: str, labels: list[str]) -> str:
    """The demo's idea of the right label: keyword sentiment when the labels are
    sentiments, else a stable pick from the text (simulated, not a classifier)."""
    t = text.lower().rsplit(":", 1)[-1]
    lower = [x.lower() for x in labels]
    if "negative" in lower and any(w in t for w in _NEGATIVE):
        return labels[lower.index("negative")]
    if "positive" in lower and any(w in t for w in _POSITIVE):
        return labels[lower.index("positive")]
    if "neutral" in lower:
        return labels[lower.index("neutral")]
    return labels[sum(map(ord, t)) % len(labels)]


class ModelProfile(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    ttft_ms: float
    tokens_per_s: float
    latency_sigma: float = 0.25
    quality: dict[str, float] = {}
    hard_prompt_delta: float = 0.0  # added to its quality on a prompt with a hard word


class Difficulty(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Prompts that mention one of ``hard_words`` are hard: each model's quality on them
    moves by its ``hard_prompt_delta`` (the cheap model falls, the strong one holds)."""

    hard_words: tuple[str, ...] = ()


class BatchProfile(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    quality_delta: float = 0.0


class DemoWorld(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    models: dict[str, ModelProfile]
    output_tokens: dict[str, float] = {}
    batch: BatchProfile = BatchProfile()
    judge_noise: float = 0.1
    difficulty: Difficulty = Difficulty()

    def hard(self, text: str) -> bool:
        words = set(re.findall(r"[a-z]+", text.lower()))
        return any(w in words for w in self.difficulty.hard_words)

    def quality(self, model: str, task_type: str, batched: bool = False,
                hard: bool = False) -> float:
        prof = self.models[model]
        q = prof.quality.get(task_type, sum(prof.quality.values()) / max(1, len(prof.quality)))
        if batched:
            q += self.batch.quality_delta
        if hard:
            q += prof.hard_prompt_delta
        return min(1.0, max(0.0, q))


def load_world(source: str = "builtin") -> DemoWorld:
    """Load a demo world: ``builtin`` or a path to a TOML file of the same shape."""
    if source == "builtin":
        text = resources.files("conductor.data").joinpath("demo_world.toml").read_text("utf-8")
    else:
        try:
            text = Path(source).read_text("utf-8")
        except OSError as exc:
            raise ConfigError(f"providers.*.world: cannot read {source!r}: {exc}") from exc
    try:
        return msgspec.convert(tomllib.loads(text), DemoWorld)
    except (msgspec.ValidationError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"demo world {source!r}: {exc}") from exc


class DemoProvider:
    """Simulated upstream. ``simulate_latency`` sleeps for the simulated time (x scale)."""

    def __init__(self, name: str, world: DemoWorld, *, seed: int = 0,
                 simulate_latency: bool = False, latency_scale: float = 1.0) -> None:
        self.name = name
        self.world = world
        self.rng = np.random.default_rng(seed)
        # The judge runs on its own thread: its own generator keeps answers deterministic.
        self.judge_rng = np.random.default_rng([seed, 1])
        self.simulate_latency = simulate_latency
        self.latency_scale = latency_scale
        # Without simulated sleeps the demo runs on simulated time: waits are not real.
        self.virtual_time = not simulate_latency

    def _answer(self, call: ProviderCall, correct: bool, n_tokens: int) -> str:
        labels = [str(x) for x in call.metadata.get("labels") or _SENTIMENTS]
        if call.task_type == "classify":
            right = _guess_label(" ".join(m.content for m in call.messages), labels)
            wrong = [x for x in labels if x != right] or labels
            return right if correct else wrong[0]
        if call.task_type == "extract_json":
            return '{"simulated": true, "fields": {}}' if correct else '{"simulated": tru'
        n_words = max(1, int(n_tokens * 0.75))
        filler = _FILLER.split()
        words = [filler[i % len(filler)] for i in range(n_words)]
        tag = "answer" if correct else f"{_OFF_TOPIC} answer"
        return f"[simulated {call.model} {tag}] " + " ".join(words)

    @staticmethod
    def _looks_right(request: str, answer: str) -> float:
        """What a demo judge sees in an answer: 1 right, 0 wrong, 0.5 cannot tell."""
        a = answer.strip()
        if a.lower() in _SENTIMENTS:  # a sentiment label: is it the text's sentiment?
            return 1.0 if a.lower() == _guess_label(request, _SENTIMENTS) else 0.0
        if a.startswith("{"):
            try:
                msgspec.json.decode(a)
            except msgspec.DecodeError:
                return 0.0
            return 1.0
        if a.startswith("[simulated "):
            return 0.0 if _OFF_TOPIC in a.split("]", 1)[0] else 1.0
        return 0.5

    def simulate(self, call: ProviderCall) -> ProviderResponse:
        """One simulated answer, without sleeping."""
        if call.model not in self.world.models:
            raise ProviderBadRequestError(
                f"model {call.model!r} is not in the demo world; "
                f"known: {sorted(self.world.models)}",
                provider=self.name, status=404)
        prof = self.world.models[call.model]
        grading = _GRADING.search(call.messages[-1].content) if call.messages else None
        if grading is not None:
            return self._judge(call, prof, grading["request"], grading["answer"])
        mean_out = self.world.output_tokens.get(
            call.task_type, self.world.output_tokens.get("default", 200.0))
        out = max(1, round(mean_out * math.exp(self.rng.normal(0.0, 0.3) - 0.045)))
        if call.max_tokens is not None:
            out = min(out, call.max_tokens)
        hard = self.world.hard(" ".join(m.content for m in call.messages if m.role == "user"))
        quality = self.world.quality(call.model, call.task_type, call.batched, hard)
        correct = bool(self.rng.random() < quality)
        latency = (prof.ttft_ms + 1000.0 * out / prof.tokens_per_s) * math.exp(
            self.rng.normal(0.0, prof.latency_sigma) - 0.5 * prof.latency_sigma ** 2)
        extra: dict[str, Any] = {"simulated_quality": 1.0 if correct else 0.0,
                                 "true_quality": quality}
        return ProviderResponse(
            text=self._answer(call, correct, out),
            input_tokens=estimate_prompt_tokens(call.messages),
            output_tokens=out,
            latency_ms=latency * self.latency_scale,
            finish_reason="length" if call.max_tokens is not None and out >= call.max_tokens
            else "stop",
            extra=extra,
        )

    def _judge(self, call: ProviderCall, prof: ModelProfile, request: str,
               answer: str) -> ProviderResponse:
        """The simulated judge: whether the answer looks right (1 or 0; 0.5 when it cannot
        tell) + N(0, judge_noise), clipped, as "Score: N" on 1-10."""
        true = self._looks_right(request, answer)
        noisy = min(1.0, max(0.0, true + self.judge_rng.normal(0.0, self.world.judge_noise)))
        text = f"Score: {round(1 + 9 * noisy)}"
        return ProviderResponse(
            text=text, input_tokens=estimate_prompt_tokens(call.messages), output_tokens=3,
            latency_ms=(prof.ttft_ms + 3000.0 / prof.tokens_per_s) * self.latency_scale)

    def simulate_batch(self, call: ProviderCall) -> ProviderResponse:
        """A micro-batch: one simulated answer per item (each from its own text), returned
        as a JSON array."""
        n = call.batch_items
        texts = re.findall(r"### Item \d+\n(.*?)(?=\n\n### Item \d+\n|\Z)",
                           call.messages[-1].content, flags=re.S)
        texts += [""] * (n - len(texts))
        each = None  # an item's own max_tokens (build_batch_call summed them, plus framing)
        if call.max_tokens is not None:
            each = max(1, call.max_tokens // n - BATCH_FRAMING_OUT_TOKENS)
        items = [self.simulate(msgspec.structs.replace(
            call, batch_items=0, batched=True, max_tokens=each,
            messages=(Message(role="user", content=t),))) for t in texts[:n]]
        prof = self.world.models[call.model]
        out = sum(r.output_tokens for r in items)
        latency = (prof.ttft_ms + 1000.0 * out / prof.tokens_per_s) * math.exp(
            self.rng.normal(0.0, prof.latency_sigma) - 0.5 * prof.latency_sigma ** 2)
        return ProviderResponse(
            text=msgspec.json.encode([r.text for r in items]).decode(),
            input_tokens=estimate_prompt_tokens(call.messages), output_tokens=out,
            latency_ms=latency * self.latency_scale,
            extra={"simulated_quality": [r.extra["simulated_quality"] for r in items],
                   "true_quality": [r.extra["true_quality"] for r in items]})

    async def complete(self, call: ProviderCall) -> ProviderResponse:
        resp = self.simulate_batch(call) if call.batch_items else self.simulate(call)
        if self.simulate_latency:
            await asyncio.sleep(resp.latency_ms / 1000.0)
        return resp

    async def stream(self, call: ProviderCall) -> AsyncIterator[StreamChunk]:
        """The simulated answer in word-sized deltas, then the final usage."""
        resp = self.simulate(call)
        words = resp.text.split(" ")
        pause = resp.latency_ms / 1000.0 / max(1, len(words)) if self.simulate_latency else 0.0
        for i, w in enumerate(words):
            if pause:
                await asyncio.sleep(pause)
            yield StreamChunk(delta=w if i == 0 else " " + w)
        yield StreamChunk(delta="", final=resp)

    async def aclose(self) -> None:
        return None
