"""Settings: a TOML file decoded into frozen Structs, plus the built-in default.

Errors name the key path (``strategies.turbo-cheap.model: unknown model 'gpt-5'``).
Nothing here reads the environment at import time; API keys are looked up by the
provider when it is opened, from the variable the config names.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import msgspec
from msgspec import Meta, Struct

from conductor.errors import ConfigError
from conductor.types import Mode, NonNegative, Positive, Probability, TaskType

# Provider kinds (conductor.providers.registry serves each).
PROVIDER_KINDS = ("demo", "local", "openai")

# The built-in heuristic evaluators (conductor.evaluators.heuristics), by name.
HEURISTIC_NAMES = ("answer_present", "valid_json", "label_valid", "within_word_limit")

_NAME = Annotated[str, Meta(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:/-]+$")]


class Timeouts(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Upstream timeouts in seconds: connect, first byte, idle between stream chunks, total."""

    connect_s: Positive = 5.0
    first_byte_s: Positive = 30.0
    idle_s: Positive = 30.0
    total_s: Positive = 120.0


class RetryConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    backoff_initial_s: NonNegative = 0.2
    backoff_max_s: NonNegative = 5.0


class CircuitConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Per (provider, model): open after consecutive failures or a failure rate over a
    window of calls; half-open after the cooldown."""

    consecutive_failures: Annotated[int, Meta(ge=1)] = 3
    failure_rate: Probability = 0.5
    window: Annotated[int, Meta(ge=1)] = 20
    min_calls: Annotated[int, Meta(ge=1)] = 10
    cooldown_s: NonNegative = 30.0


class ProviderConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """An upstream. ``demo`` replays the built-in simulated world; ``openai`` is any
    OpenAI-compatible chat completions API."""

    kind: str  # one of PROVIDER_KINDS
    base_url: str = ""
    api_key_env: str | None = None
    timeouts: Timeouts = Timeouts()
    retry: RetryConfig = RetryConfig()
    circuit: CircuitConfig = CircuitConfig()
    world: str = "builtin"
    seed: int = 0
    simulate_latency: bool = False
    latency_scale: Positive = 1.0
    model_path: str = ""  # local: a GGUF file; empty = the bundled SmolLM2-135M-Instruct
    context_size: Annotated[int, Meta(ge=128)] = 2048
    threads: Annotated[int, Meta(ge=1, le=256)] = 2


class ModelConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A model on a provider with its public prices (USD per 1M tokens)."""

    provider: _NAME
    input_usd_per_1m: NonNegative
    output_usd_per_1m: NonNegative
    context_window: Annotated[int, Meta(ge=1)] = 128_000
    upstream_name: str | None = None

    def cost_usd(self, input_tokens: float, output_tokens: float) -> float:
        """What these tokens cost at this model's prices."""
        return (input_tokens * self.input_usd_per_1m
                + output_tokens * self.output_usd_per_1m) / 1e6


class BatchConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    window_ms: NonNegative = 50.0
    max_batch: Annotated[int, Meta(ge=1, le=256)] = 10
    discount: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.5


class VerifiedConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Draft with ``draft``, score it, escalate to ``escalate_to`` below ``accept_score``."""

    draft: _NAME
    escalate_to: _NAME
    accept_score: Probability = 0.7
    prior_escalation_rate: Probability = 0.3


class _Strategy(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True,
                tag_field="mode"):
    """A model plus a way of running it, with the priors the policy starts from. The
    mode is the tag of a union (``DirectStrategy | BatchStrategy | VerifiedStrategy``), so a
    mode's table can only appear with its mode."""

    model: _NAME
    max_tokens: Annotated[int, Meta(ge=1)] | None = None
    prior_quality: Probability = 0.7
    prior_strength: Positive = 2.0
    prior_latency_ms: Positive = 1000.0
    prior_latency_sigma: Positive = 0.5
    prior_output_tokens: Positive | None = None

    @property
    def mode(self) -> Mode:
        return Mode(str(self.__struct_config__.tag))

    @property
    def batch_discount(self) -> float:
        """The price factor of a batch strategy (1 for the others)."""
        return 1.0

    @property
    def batch_window_ms(self) -> float:
        """How long a batch strategy may hold a request (0 for the others)."""
        return 0.0


class DirectStrategy(_Strategy, tag="direct", frozen=True):
    """One call to one model."""


class BatchStrategy(_Strategy, tag="batch", frozen=True):
    """Compatible requests held for a short window and sent together."""

    batch: BatchConfig = BatchConfig()

    @property
    def batch_discount(self) -> float:
        return self.batch.discount

    @property
    def batch_window_ms(self) -> float:
        return self.batch.window_ms


class VerifiedStrategy(_Strategy, tag="verified", frozen=True):
    """A cheap draft scored by an evaluator, escalated below the acceptance score."""

    verified: VerifiedConfig


StrategyConfig = DirectStrategy | BatchStrategy | VerifiedStrategy
MODES = {m.value for m in Mode}


class RelativeTarget(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A quality target stated against a reference strategy: ``ratio`` x its quality."""

    relative_to: _NAME
    ratio: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.95


class TaskTypeConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """Defaults for one task type: constraints, judging, heuristics, eligible strategies.

    Two kinds of quality requirement, never confused: ``min_quality`` is a per-request
    *floor* on the predicted quality of the strategy serving that request;
    ``quality_target`` is the mean quality of the traffic served for the task type (over
    the policy's window), absolute (``quality_target = 0.9``) or relative to a reference
    strategy (``quality_target = { relative_to = "turbo-quality", ratio = 0.95 }``)."""

    max_latency_ms: Positive | None = None
    min_quality: Probability | None = None
    quality_target: Probability | RelativeTarget | None = None
    max_cost_usd: NonNegative | None = None
    judge_sample_rate: Probability = 0.05
    expected_output_tokens: Positive = 256.0
    labels: tuple[str, ...] = ()
    max_words: Annotated[int, Meta(ge=1)] | None = None
    strategies: tuple[str, ...] = ()
    heuristics: tuple[str, ...] = ()  # by name; empty: every heuristic serving the task
    max_output_tokens: Annotated[int, Meta(ge=1)] = 4096  # cost reservation when no max_tokens


class JudgeConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The LLM judge: a strategy like any other, sampled per task type's judge_sample_rate
    (boosted where the posterior is wide), within a per-hour budget."""

    strategy: str | None = None
    max_calls_per_hour: Annotated[int, Meta(ge=0)] = 5000
    workers: Annotated[int, Meta(ge=1, le=64)] = 2
    queue_size: Annotated[int, Meta(ge=1)] = 1000
    uncertainty_reference_std: Positive = 0.02
    min_calibration_pairs: Annotated[int, Meta(ge=1)] = 30
    use_grammar: bool = False  # send a GBNF grammar (llama.cpp) so replies always parse


class ClientConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """A client of the service. Keys are stored as SHA-256 hashes or read from ``api_key_env``."""

    api_key_sha256: str | None = None
    api_key_env: str | None = None
    requests_per_minute: Annotated[int, Meta(ge=1)] | None = None
    requests_per_hour: Annotated[int, Meta(ge=1)] | None = None
    max_cost_per_hour_usd: NonNegative | None = None
    admin: bool = False
    quality_targets: dict[str, Probability] = {}  # stricter targets of its own, by task type


class PolicyConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The bandit's knobs. ``half_life`` counts observations of a task type (None: no decay)."""

    version: str = "v1"
    default_strategy: _NAME
    rollout_percent: Annotated[float, Meta(ge=0.0, le=100.0)] = 100.0
    half_life: Positive | None = 5000.0
    exploration: dict[str, Annotated[float, Meta(ge=0.0, le=100.0)]] = {}
    default_exploration: Annotated[float, Meta(ge=0.0, le=100.0)] = 1.0
    quality_per_usd: NonNegative = 20.0
    freeze: bool = False
    propensity_draws: Annotated[int, Meta(ge=100, le=1_000_000)] = 4000
    # Under a quality target (coin integrated out, so fewer draws give the same precision).
    mix_propensity_draws: Annotated[int, Meta(ge=100, le=1_000_000)] = 1000
    # A logged decision's own propensity under a target: drawn in chunks until its
    # standard error is within this share of it, at most `mix_propensity_max_draws` draws.
    mix_propensity_rel_se: Annotated[float, Meta(gt=0.0, le=1.0)] = 0.03
    mix_propensity_max_draws: Annotated[int, Meta(ge=100, le=1_000_000)] = 4000
    wide_posterior_trials: NonNegative = 40.0
    guard_floor: Probability = 0.001
    seed: int | None = None
    max_fallback_cost_ratio: Positive = 10.0
    # Quality targets: the deficit controller's gain (target raised per unit of quality
    # owed), how far a surplus may lower it, a margin it aims above the target (so the
    # window lands at or above it, not around it), how many standard deviations above its
    # posterior mean a relative target takes the reference's quality to be, the window's
    # half-life in rewards (None: the
    # posterior's), the confidence of the conservative check (std below the mean), and
    # the shortlist: every `shortlist_every` observations, strategies used by the mix in
    # under `shortlist_min_share` of posterior draws, once observed `shortlist_min_trials`
    # times, are set aside from exploration.
    target_gain: NonNegative = 0.01
    target_surplus_cap: NonNegative = 0.05
    target_margin: Annotated[float, Meta(ge=0.0, le=0.1)] = 0.002
    target_reference_z: NonNegative = 1.0
    target_half_life: Positive | None = None
    target_decay: bool = True  # false: the window is the whole history, undecayed
    target_confidence: NonNegative = 1.0
    shortlist_every: Annotated[int, Meta(ge=1)] = 50
    shortlist_min_share: Probability = 0.01
    shortlist_min_trials: NonNegative = 20.0
    shortlist_draws: Annotated[int, Meta(ge=10, le=100_000)] = 256
    # Probes (under a quality target, with a judge): a strategy costing at most
    # `probe_cost_ratio` x the safe strategy is run off the request path and judged
    # rather than served while the conservative check holds it back, or while its quality
    # posterior weighs less than `probe_trials` rewards, prior included (ratio 0: never).
    probe_cost_ratio: Annotated[float, Meta(ge=0.0, le=1.0)] = 0.25
    probe_trials: NonNegative = 30.0
    # Per-prompt routing: a residual quality model per strategy on the prompt's features
    # (hashed words projected to `context_dim` dimensions, seeded by `context_seed`), with
    # prior standard deviation `context_prior_std` on its weights and noise variance
    # `context_noise_var`.
    context: bool = False
    context_dim: Annotated[int, Meta(ge=4, le=256)] = 64
    context_seed: int = 0
    context_prior_std: Positive = 1.0
    context_noise_var: Positive = 0.25
    context_reservoir: Annotated[int, Meta(ge=8, le=100_000)] = 256
    # Decide per prompt once the features have predicted `context_min_rewards` rewards
    # better than the task level by `context_min_gain` in mean squared error.
    context_min_gain: float = 0.002
    context_min_rewards: NonNegative = 50.0
    # A priors file written by `conductor calibrate`: where every (task type, strategy) it
    # names starts, instead of its configured prior_quality (the path as given, relative
    # to the working directory). Evidence learned since stays on top of it after restarts.
    priors: str | None = None

    def gamma(self) -> float:
        """Per-observation decay of the posteriors' evidence (1: no decay)."""
        return 0.5 ** (1.0 / self.half_life) if self.half_life else 1.0

    def target_gamma(self) -> float:
        """Per-reward decay of the quality target's window (1: no decay)."""
        hl = self.target_half_life or self.half_life
        return 0.5 ** (1.0 / hl) if hl and self.target_decay else 1.0


class StorageConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The log store: the SQLite file ``path``, or the PostgreSQL database ``url``
    (``postgresql://user@host/dbname``; it wins over ``path``) that several replicas
    share. ``follow_every_s``: how often a process applies what other workers or replicas
    on the same store learned (0: never; a lone process loses nothing). ``pool_size``:
    PostgreSQL connections per process at most."""

    path: str = "conductor.db"
    url: str | None = None
    pool_size: Annotated[int, Meta(ge=2, le=1000)] = 10
    store_text: bool = False
    snapshot_every_s: Positive = 60.0
    follow_every_s: NonNegative = 0.5


class MonitoringConfig(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What /v1/stats and the dashboard keep: counts per ``interval_s`` bucket, a sliding
    ``window_s`` for the window's figures and alerts, and the last ``history_points``
    buckets as time series (the default: an hour in 10-second steps)."""

    interval_s: Positive = 10.0
    window_s: Positive = 300.0
    history_points: Annotated[int, Meta(ge=2, le=100_000)] = 360


class Settings(Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """The whole configuration. Build it with ``load_settings`` or ``default_settings``."""

    providers: dict[str, ProviderConfig]
    models: dict[str, ModelConfig]
    strategies: dict[str, StrategyConfig]
    policy: PolicyConfig
    task_types: dict[str, TaskTypeConfig] = {}
    judge: JudgeConfig = JudgeConfig()
    clients: dict[str, ClientConfig] = {}
    storage: StorageConfig = StorageConfig()
    monitoring: MonitoringConfig = MonitoringConfig()

    def strategies_for(self, task_type: str) -> list[str]:
        """Eligible strategy names for a task type, in configuration order."""
        allowed = self.task_types[task_type].strategies
        return [s for s in self.strategies if not allowed or s in allowed]

    def models_of(self, strategy: str) -> list[str]:
        """The models a strategy may call: its own, and a verified one's escalation's."""
        st = self.strategies[strategy]
        out = [st.model]
        if isinstance(st, VerifiedStrategy):
            out += self.models_of(st.verified.escalate_to)
        return out

    def micro_batches(self, strategy: str) -> bool:
        """Whether a strategy's answer can come from a micro-batch: a batch strategy, or a
        verified one drafting or escalating on one."""
        st = self.strategies[strategy]
        if isinstance(st, VerifiedStrategy):
            return self.micro_batches(st.verified.draft) or self.micro_batches(
                st.verified.escalate_to)
        return isinstance(st, BatchStrategy)

    def model_of(self, strategy: str) -> ModelConfig:
        return self.models[self.strategies[strategy].model]

    def temperature(self, task_type: str) -> float:
        return self.policy.exploration.get(task_type, self.policy.default_exploration)

    def target_gamma(self) -> float:
        return self.policy.target_gamma()


def _check(cond: bool, path: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{path}: {message}")


def _validate(s: Settings) -> Settings:
    """Cross-reference checks msgspec cannot express; each names its key path."""
    _check(bool(s.strategies), "strategies", "at least one strategy is required")
    for name, pc in s.providers.items():
        _check(pc.kind in PROVIDER_KINDS, f"providers.{name}.kind",
               f"unknown kind {pc.kind!r}; valid: {', '.join(PROVIDER_KINDS)}")
    for name, m in s.models.items():
        _check(m.provider in s.providers, f"models.{name}.provider",
               f"unknown provider {m.provider!r}; known: {sorted(s.providers)}")
    for name, st in s.strategies.items():
        path = f"strategies.{name}"
        _check(st.model in s.models, f"{path}.model",
               f"unknown model {st.model!r}; known: {sorted(s.models)}")
        if isinstance(st, VerifiedStrategy):
            for key in ("draft", "escalate_to"):
                ref = getattr(st.verified, key)
                _check(ref in s.strategies, f"{path}.verified.{key}",
                       f"unknown strategy {ref!r}; known: {sorted(s.strategies)}")
                _check(not isinstance(s.strategies[ref], VerifiedStrategy),
                       f"{path}.verified.{key}",
                       f"{ref!r} is itself verified; verified strategies cannot nest")
    for tname, tt in s.task_types.items():
        if isinstance(tt.quality_target, RelativeTarget):
            ref = tt.quality_target.relative_to
            _check(ref in s.strategies, f"task_types.{tname}.quality_target.relative_to",
                   f"unknown strategy {ref!r}; known: {sorted(s.strategies)}")
        for h in tt.heuristics:
            _check(h in HEURISTIC_NAMES, f"task_types.{tname}.heuristics",
                   f"unknown heuristic {h!r}; known: {list(HEURISTIC_NAMES)}")
        for ref in tt.strategies:
            _check(ref in s.strategies, f"task_types.{tname}.strategies",
                   f"unknown strategy {ref!r}; known: {sorted(s.strategies)}")
    p = s.policy
    _check(p.default_strategy in s.strategies, "policy.default_strategy",
           f"unknown strategy {p.default_strategy!r}; known: {sorted(s.strategies)}")
    for cname, c in s.clients.items():
        for tname in c.quality_targets:
            _check(tname in s.task_types, f"clients.{cname}.quality_targets.{tname}",
                   f"unknown task type; known: {sorted(s.task_types)}")
    for tname in p.exploration:
        _check(tname in s.task_types, f"policy.exploration.{tname}",
               f"unknown task type; known: {sorted(s.task_types)}")
    if s.storage.url is not None:
        _check(s.storage.url.startswith(("postgresql://", "postgres://")), "storage.url",
               "expected a PostgreSQL URL, postgresql://user@host/dbname (a SQLite file "
               "goes in storage.path)")
    if s.judge.strategy is not None:
        _check(s.judge.strategy in s.strategies, "judge.strategy",
               f"unknown strategy {s.judge.strategy!r}; known: {sorted(s.strategies)}")
    return s


_SECTIONS: dict[str, Any] = {
    "providers": ProviderConfig, "models": ModelConfig, "strategies": StrategyConfig,
    "task_types": TaskTypeConfig, "clients": ClientConfig,
}


def _convert(value: Any, typ: Any, path: str) -> Any:
    """msgspec.convert, with errors rewritten to name the full key path."""
    try:
        return msgspec.convert(value, typ)
    except msgspec.ValidationError as exc:
        msg = str(exc)
        where = path
        if " - at `$" in msg:
            msg, at = msg.rsplit(" - at `$", 1)
            where = path + at.rstrip("`")
        if msg.startswith("Object contains unknown field"):
            msg = msg.replace("Object contains", "contains")
            if not where:
                fields = ", ".join(sorted(f for f in Settings.__struct_fields__))
                msg += f"; valid top-level tables: {fields}"
        raise ConfigError(f"{where}: {msg}" if where else msg) from exc


def _with_mode(entry: Any, path: str) -> Any:
    """A strategy table with its mode made explicit (``direct`` when absent)."""
    if not isinstance(entry, dict):
        return entry
    mode = entry.get("mode", Mode.DIRECT.value)
    if mode not in MODES:
        raise ConfigError(f"{path}.mode: unknown mode {mode!r}; valid: {sorted(MODES)}")
    return {**entry, "mode": mode}


def settings_from_dict(data: dict[str, Any], source: str = "<config>") -> Settings:
    """Decode and validate a configuration mapping. Built-in task types are always present."""
    try:
        if not isinstance(data, dict):
            raise ConfigError("the configuration must be a table")
        data = dict(data)
        task_types = dict(data.get("task_types") or {})
        for t in TaskType:
            task_types.setdefault(t.value, {})
        data["task_types"] = task_types
        for section, typ in _SECTIONS.items():
            entries = data.get(section, {})
            if not isinstance(entries, dict):
                raise ConfigError(f"{section}: expected a table of named entries")
            if section == "strategies":
                entries = {k: _with_mode(v, f"strategies.{k}") for k, v in entries.items()}
            data[section] = {k: _convert(v, typ, f"{section}.{k}") for k, v in entries.items()}
        for key, typ in (("policy", PolicyConfig), ("judge", JudgeConfig),
                         ("storage", StorageConfig), ("monitoring", MonitoringConfig)):
            if key in data:
                data[key] = _convert(data[key], typ, key)
        if "policy" not in data:
            raise ConfigError("policy: missing table (it names the default_strategy)")
        settings = _convert(data, Settings, "")
        return _validate(settings)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {str(exc).lstrip('.')}") from exc.__cause__


def load_settings(path: str | Path) -> Settings:
    """Read a TOML configuration file."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{p}: no such config file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: not valid TOML: {exc}") from exc
    return settings_from_dict(data, source=str(p))


def default_settings() -> Settings:
    """The built-in default: the reference deployment's strategies on the demo world."""
    text = resources.files("conductor.data").joinpath("default.toml").read_text("utf-8")
    return settings_from_dict(tomllib.loads(text), source="<built-in default.toml>")
