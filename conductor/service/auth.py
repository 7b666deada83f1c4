"""API keys -> client ids. Keys are kept as SHA-256 hashes, never in plain text."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping

from conductor.config import ClientConfig
from conductor.errors import (
    AuthenticationError,
    ConfigError,
    PermissionDeniedError,
    RateLimitedError,
)

log = logging.getLogger("conductor.service")


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class FailedKeys:
    """Failed API keys per source address over a sliding minute: past ``limit`` the
    address is refused (429) before its key is even checked, so keys cannot be guessed at
    speed. At most ``max_addresses`` are tracked (the oldest forgotten first)."""

    def __init__(self, limit: int = 10, window_s: float = 60.0, max_addresses: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.max_addresses = limit, window_s, max_addresses
        self.clock = clock
        self._by_address: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        with self._lock:
            times = self._by_address.get(address)
            if not times:
                return
            now = self.clock()
            while times and now - times[0] >= self.window_s:
                times.popleft()
            if len(times) >= self.limit:
                raise RateLimitedError(
                    f"{address}: too many failed API keys ({len(times)} in the last "
                    f"{self.window_s:g} s)", retry_after_s=self.window_s - (now - times[0]),
                    limit="failed_api_keys")

    def failed(self, address: str) -> None:
        with self._lock:
            times = self._by_address.pop(address, None) or deque()
            times.append(self.clock())
            self._by_address[address] = times
            while len(self._by_address) > self.max_addresses:
                self._by_address.popitem(last=False)


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
        self.failures = FailedKeys()
        if self.open:
            log.warning("no API keys configured: the service is open, every caller is the "
                        "'default' client and the admin endpoints are unprotected")

    def client_for(self, authorization: str | None, api_key: str | None,
                   address: str = "") -> str:
        """The client a key belongs to. Failed keys count against ``address``."""
        if self.open:
            return "default"
        key = api_key
        if authorization and authorization.lower().startswith("bearer "):
            key = authorization[7:].strip()
        if not key:
            raise AuthenticationError("missing API key: send 'Authorization: Bearer <key>'")
        self.failures.check(address)
        h = key_hash(key)
        for known, client in self._by_hash.items():
            if hmac.compare_digest(known, h):
                return client
        self.failures.failed(address)
        raise AuthenticationError("invalid API key")

    def require_admin(self, client: str) -> None:
        if not self.open and client not in self.admins:
            raise PermissionDeniedError(f"client {client!r} is not an admin")
