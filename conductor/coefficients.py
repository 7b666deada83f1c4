"""Fitted priors on disk (what ``conductor calibrate`` writes), read and validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from conductor.bandit.context import ContextModel
from conductor.bandit.posterior import Prior
from conductor.bandit.priors import Coefficients
from conductor.config import PolicyConfig, Settings
from conductor.errors import ConfigError


def load_coefficients(path: str | Path, settings: Settings | None = None) -> Coefficients:
    """Read priors written by ``conductor calibrate``: {task_type: {strategy: Prior}}.

    With ``settings``, every task type and strategy must be configured there: a misspelled
    name is an error naming it, never silently ignored. An empty file of priors is an
    error too (it would change nothing).
    """
    try:
        data = msgspec.json.decode(Path(path).read_bytes())
        tasks = data.get("priors", data) if isinstance(data, dict) else None
        out = msgspec.convert(tasks, dict[str, dict[str, Prior]])
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read priors: {exc}") from exc
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ConfigError(f"{path}: not a priors file: {exc}") from exc
    if not any(out.values()):
        raise ConfigError(f"{path}: no priors in the file")
    if settings is not None:
        for task, row in out.items():
            if task not in settings.task_types:
                raise ConfigError(f"{path}: unknown task type {task!r}; configured: "
                                  f"{', '.join(sorted(settings.task_types))}")
            for strategy in row:
                if strategy not in settings.strategies:
                    raise ConfigError(f"{path}: {task}: unknown strategy {strategy!r}; "
                                      f"configured: {', '.join(sorted(settings.strategies))}")
    for task, row in out.items():
        for strategy, prior in row.items():
            if not prior.is_valid():
                raise ConfigError(f"{path}: {task}/{strategy}: invalid prior {prior}")
    return out


def configured_coefficients(settings: Settings) -> Coefficients | None:
    """The priors file named by ``[policy] priors`` (None when it names none), checked
    against the config; a problem with it is a config error that names the setting."""
    path = settings.policy.priors
    if not path:
        return None
    try:
        return load_coefficients(path, settings)
    except ConfigError as exc:
        raise ConfigError(f"policy.priors: {exc}") from exc.__cause__


def load_context_priors(path: str | Path) -> dict[str, Any] | None:
    """The per-prompt models ``conductor calibrate`` fitted on an outcome table with
    prompts (``{"dim", "seed", "tasks": {task_type: state}}``), or None when the file has
    none (fitted from logs, or from a table without prompts)."""
    try:
        data = msgspec.json.decode(Path(path).read_bytes())
    except (OSError, msgspec.DecodeError) as exc:
        raise ConfigError(f"{path}: cannot read priors: {exc}") from exc
    context = data.get("context") if isinstance(data, dict) else None
    if context is None:
        return None
    if not (isinstance(context, dict) and isinstance(context.get("tasks"), dict)
            and isinstance(context.get("dim"), int) and isinstance(context.get("seed"), int)):
        raise ConfigError(f"{path}: its 'context' is not what conductor calibrate writes")
    return context


def warm_start_contexts(contexts: dict[str, ContextModel], policy: PolicyConfig) -> None:
    """Start the per-prompt models from what ``conductor calibrate`` fitted on an outcome
    table with prompts, when ``[policy] priors`` names such a file. Done before the log is
    restored: a snapshot replaces them (it holds them, with what was learned since) and
    events are applied on top."""
    if not contexts or not policy.priors:
        return
    warm = load_context_priors(policy.priors)
    if warm is None:
        return
    if (warm["dim"], warm["seed"]) != (policy.context_dim, policy.context_seed):
        raise ConfigError(f"policy.priors: its per-prompt models were fitted with "
                          f"context_dim {warm['dim']} and context_seed {warm['seed']}; the "
                          f"config has {policy.context_dim} and {policy.context_seed}")
    for task, model in contexts.items():
        saved = warm["tasks"].get(task)
        for problem in model.load(saved) if saved is not None else []:
            raise ConfigError(f"policy.priors: {task}: {problem}")
