"""Upstream model APIs behind one protocol: the demo world and OpenAI-compatible servers."""

from conductor.providers.base import (
    Provider,
    ProviderCall,
    ProviderResponse,
    estimate_prompt_tokens,
    estimate_tokens,
)
from conductor.providers.demo import DemoProvider, DemoWorld, load_world

__all__ = [
    "DemoProvider",
    "DemoWorld",
    "Provider",
    "ProviderCall",
    "ProviderResponse",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "load_world",
]
