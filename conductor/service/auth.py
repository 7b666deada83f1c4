"""API keys -> client ids. Keys are kept as SHA-256 hashes, never in plain text."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
from collections.abc import Mapping

from conductor.config import ClientConfig
from conductor.errors import AuthenticationError, ConfigError, PermissionDeniedError

log = logging.getLogger("conductor.service")


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class KeyRing:
    """Resolves the key of a request to its client id. With no keys configured the
    service is open: every request is the ``default`` client, and admin is open too."""

    def __init__(self, clients: Mapping[str, ClientConfig],
                 environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self._by_hash: dict[str, str] = {}
        self.admins: set[str] = set()
        for name, c in clients.items():
            hashes = []
            if c.api_key_sha256:
                hashes.append(c.api_key_sha256.lower())
            if c.api_key_env:
                key = env.get(c.api_key_env)
                if not key:
                    raise ConfigError(f"clients.{name}.api_key_env: environment variable "
                                      f"{c.api_key_env} is not set")
                hashes.append(key_hash(key))
            for h in hashes:
                self._by_hash[h] = name
            if c.admin:
                self.admins.add(name)
        self.open = not self._by_hash
        if self.open:
            log.warning("no API keys configured: the service is open, every caller is the "
                        "'default' client and the admin endpoints are unprotected")

    def client_for(self, authorization: str | None, api_key: str | None) -> str:
        if self.open:
            return "default"
        key = api_key
        if authorization and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        if not key:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        h = key_hash(key)
        for known, client in self._by_hash.items():
            if hmac.compare_digest(known, h):
                return client
        raise AuthenticationError("invalid API key")

    def require_admin(self, client: str) -> None:
        if not self.open and client not in self.admins:
            raise PermissionDeniedError(f"client {client!r} is not an admin")
