"""Fitted priors on disk (what ``conductor calibrate`` writes), read and validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from msgspec import Struct

from conductor.bandit.context import ContextModel
from conductor.bandit.posterior import Prior
from conductor.bandit.priors import Coefficients
from conductor.config import PolicyConfig, Settings
from conductor.errors import ConfigError


class ContextPriors(Struct, kw_only=True, frozen=True):
    """The per-prompt models ``conductor calibrate`` fitted (on an outcome table with
    prompts, or on logs of per-prompt traffic): the feature size and seed they were fitted
    with, and each task type's ``ContextModel.to_dict()``."""

    dim: int
    seed: int
    tasks: dict[str, dict[str, Any]]


def read_priors_file(path: str | Path, settings: Settings | None = None
                     ) -> tuple[Coefficients, ContextPriors | None]:
    """Read what ``conductor calibrate`` writes, once: the priors {task_type: {strategy:
    Prior}} and, when it fitted them, the per-prompt models.

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
    try:
        context = msgspec.convert(data.get("context"), ContextPriors | None)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{path}: its 'context' is not what conductor calibrate writes: "
                          f"{exc}") from exc
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
    return out, context


def load_coefficients(path: str | Path, settings: Settings | None = None) -> Coefficients:
    """The priors of a file ``conductor calibrate`` wrote (``read_priors_file``)."""
    return read_priors_file(path, settings)[0]


def configured_priors(settings: Settings) -> tuple[Coefficients | None, ContextPriors | None]:
    """What the file ``[policy] priors`` names holds (nothing when it names none), checked
    against the config; a problem with it is a config error that names the setting."""
    path = settings.policy.priors
    if not path:
        return None, None
    try:
        return read_priors_file(path, settings)
    except ConfigError as exc:
        raise ConfigError(f"policy.priors: {exc}") from exc.__cause__


def start_contexts(contexts: dict[str, ContextModel], warm: ContextPriors | None,
                   policy: PolicyConfig) -> None:
    """Start per-prompt models from fitted ones (``warm``; None: as they are). The router
    does this before the log is restored: a snapshot replaces them (it holds them, with
    what was learned since) and events are applied on top. Models fitted with another
    feature size or seed cannot be read with this config's features: an error."""
    if warm is None or not contexts:
        return
    if (warm.dim, warm.seed) != (policy.context_dim, policy.context_seed):
        raise ConfigError(f"policy.priors: its per-prompt models were fitted with "
                          f"context_dim {warm.dim} and context_seed {warm.seed}; the "
                          f"config has {policy.context_dim} and {policy.context_seed}")
    for task, model in contexts.items():
        saved = warm.tasks.get(task)
        for problem in model.load(saved) if saved is not None else []:
            raise ConfigError(f"policy.priors: {task}: {problem}")
