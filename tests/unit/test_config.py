"""Configuration: the defaults load, and every error names the offending key path."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from conductor.config import default_settings, load_settings, settings_from_dict
from conductor.errors import ConfigError
from conductor.types import Mode, TaskType

ROOT = Path(__file__).resolve().parents[2]


def _base() -> dict:
    return tomllib.loads((ROOT / "conductor/data/default.toml").read_text())


def test_default_config_has_the_reference_strategies_and_every_task_type() -> None:
    s = default_settings()
    assert set(s.strategies) == {"turbo-cheap", "turbo-quality", "batch-cheap",
                                 "quality-verified"}
    assert s.strategies["batch-cheap"].mode == Mode.BATCH
    assert s.strategies["quality-verified"].verified.escalate_to == "turbo-quality"
    assert set(TaskType) <= set(s.task_types)
    assert s.providers["demo"].kind == "demo"


def test_reference_example_config_loads() -> None:
    s = load_settings(ROOT / "examples/reference.toml")
    assert s.providers["openai"].api_key_env == "OPENAI_API_KEY"
    assert s.models["gpt-4o-mini"].input_usd_per_1m == 0.15
    assert s.task_types["classify"].labels[0] == "electronics"


def test_operator_task_types_are_added_to_the_built_in_ones() -> None:
    data = _base()
    data["task_types"]["translate"] = {"min_quality": 0.9}
    s = settings_from_dict(data)
    assert s.task_types["translate"].min_quality == 0.9
    assert "classify" in s.task_types


def test_a_strategy_micro_batches_itself_or_through_its_draft_or_escalation() -> None:
    data = _base()
    verified = data["strategies"]["quality-verified"]["verified"]
    s = settings_from_dict(data)
    assert [n for n in s.strategies if s.micro_batches(n)] == ["batch-cheap"]
    for role in ("draft", "escalate_to"):
        changed = {**verified, role: "batch-cheap"}
        data["strategies"]["quality-verified"]["verified"] = changed
        s = settings_from_dict(data)
        assert s.micro_batches("quality-verified"), role
        assert not s.micro_batches("turbo-cheap")


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d: d["strategies"]["turbo-cheap"].update(model="gpt-5"),
     r"strategies\.turbo-cheap\.model: unknown model 'gpt-5'"),
    (lambda d: d["strategies"]["turbo-cheap"].update(colour="red"),
     r"strategies\.turbo-cheap: contains unknown field `colour`"),
    (lambda d: d["strategies"]["turbo-cheap"].update(prior_quality=1.5),
     r"strategies\.turbo-cheap\.prior_quality: Expected `float` <= 1\.0"),
    (lambda d: d["models"]["gpt-4o"].update(input_usd_per_1m=-1),
     r"models\.gpt-4o\.input_usd_per_1m: Expected `float` >= 0\.0"),
    (lambda d: d["models"]["gpt-4o"].update(provider="azure"),
     r"models\.gpt-4o\.provider: unknown provider 'azure'"),
    (lambda d: d["policy"].update(default_strategy="nope"),
     r"policy\.default_strategy: unknown strategy 'nope'"),
    (lambda d: d["policy"].update(rollout_percent=150),
     r"policy\.rollout_percent: Expected `float` <= 100\.0"),
    (lambda d: d["policy"].update(exploration={"poetry": 1.0}),
     r"policy\.exploration\.poetry: unknown task type"),
    (lambda d: d["strategies"]["quality-verified"]["verified"].update(draft="ghost"),
     r"strategies\.quality-verified\.verified\.draft: unknown strategy 'ghost'"),
    (lambda d: d["strategies"]["turbo-cheap"].update(
        verified={"draft": "turbo-cheap", "escalate_to": "turbo-quality"}),
     r"strategies\.turbo-cheap: contains unknown field `verified`"),
    (lambda d: d["strategies"]["batch-cheap"].update(mode="bulk"),
     r"strategies\.batch-cheap\.mode: unknown mode 'bulk'; valid: \['batch', 'direct', "
     r"'verified'\]"),
    (lambda d: d["strategies"]["quality-verified"].pop("verified"),
     r"strategies\.quality-verified: Object missing required field `verified`"),
    (lambda d: d.update(stratgies={}),
     r"test\.toml: contains unknown field `stratgies`; valid top-level tables: clients, judge"),
    (lambda d: d["task_types"]["classify"].update(min_quality="high"),
     r"task_types\.classify\.min_quality: Expected `float \| null`, got `str`"),
    (lambda d: d.update(judge={"strategy": "ghost"}),
     r"judge\.strategy: unknown strategy 'ghost'"),
    (lambda d: d["providers"]["demo"].update(kind="smoke-signals"),
     r"providers\.demo\.kind: unknown kind 'smoke-signals'; valid: demo, local, openai"),
])
def test_config_errors_name_the_key_path(mutate, message: str) -> None:
    data = _base()
    mutate(data)
    with pytest.raises(ConfigError, match=message):
        settings_from_dict(data, source="test.toml")


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such config file"):
        load_settings(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[policy\n")
    with pytest.raises(ConfigError, match=r"bad\.toml: not valid TOML"):
        load_settings(bad)
