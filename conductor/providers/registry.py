"""Providers by kind: the one place that knows which class serves which ``kind``."""

from __future__ import annotations

from collections.abc import Callable

from conductor.config import ProviderConfig, Settings
from conductor.errors import ConfigError
from conductor.providers.base import Provider


def _demo(name: str, pc: ProviderConfig) -> Provider:
    from conductor.providers.demo import DemoProvider, load_world

    return DemoProvider(name, load_world(pc.world), seed=pc.seed,
                        simulate_latency=pc.simulate_latency, latency_scale=pc.latency_scale)


def _openai(name: str, pc: ProviderConfig) -> Provider:
    from conductor.providers.openai import OpenAIProvider

    if not pc.base_url:
        raise ConfigError(f"providers.{name}.base_url: required for kind 'openai'")
    return OpenAIProvider(name, pc)


def _local(name: str, pc: ProviderConfig) -> Provider:
    from conductor.providers.local import LocalProvider  # needs the optional xllamacpp

    return LocalProvider(name, pc)


# kind -> factory. Imports are inside the factories so an optional backend costs nothing
# until a config asks for it.
KINDS: dict[str, Callable[[str, ProviderConfig], Provider]] = {
    "demo": _demo, "local": _local, "openai": _openai}


def open_provider(name: str, pc: ProviderConfig) -> Provider:
    factory = KINDS.get(pc.kind)
    if factory is None:
        raise ConfigError(f"providers.{name}.kind: unknown kind {pc.kind!r}; valid: "
                          f"{', '.join(sorted(KINDS))}")
    return factory(name, pc)


def open_providers(settings: Settings) -> dict[str, Provider]:
    """Provider instances for every configured provider, by config name."""
    return {name: open_provider(name, pc) for name, pc in settings.providers.items()}
