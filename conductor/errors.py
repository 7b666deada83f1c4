"""Conductor's exception tree.

Every error Conductor raises on purpose is a ``ConductorError``. Foreign errors
(httpx, sqlite3, msgspec) are translated at the boundary with ``raise ... from exc``.
The HTTP status of each class is decided in ``conductor.service``; the CLI exit
code in ``conductor.cli``. Nowhere else.

    ConductorError
    ├── ConfigError               invalid or inconsistent configuration (names the key path)
    ├── InvalidRequestError       a request that cannot be routed as given (names the field)
    │   └── UnknownStrategyError  a strategy or model name that is not configured
    ├── AuthenticationError       a missing or unknown API key
    ├── PermissionDeniedError     a non-admin client on an admin endpoint
    ├── NotFoundError             an unknown request id
    ├── RateLimitedError          a client limit was hit (carries retry_after_s)
    ├── NoStrategyAvailableError  every strategy is ineligible (circuits open, none configured)
    ├── ProviderError             an upstream call failed (carries the upstream's message)
    │   ├── ProviderTimeoutError
    │   ├── ProviderRateLimitedError   429 from upstream (carries retry_after_s)
    │   ├── ProviderServerError        5xx from upstream
    │   ├── ProviderBadRequestError    4xx other than auth and 429
    │   ├── ProviderAuthError          401/403
    │   ├── ProviderStreamError        a stream cut before its end
    │   └── BatchItemError             one item of a micro-batch had no usable answer
    ├── JudgeError                a judge reply with no parsable score (a failure, not a zero)
    └── StorageError              the store cannot be opened or written
        └── SchemaVersionError    the database is newer than this Conductor
"""

from __future__ import annotations


class ConductorError(Exception):
    """Base of every error Conductor raises on purpose."""


class ConfigError(ConductorError):
    """The configuration is invalid; the message names the key path."""


class InvalidRequestError(ConductorError):
    """A request cannot be routed as given; ``field`` names what is wrong."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class UnknownStrategyError(InvalidRequestError):
    """A strategy (or model) name that is not configured; lists the valid ones."""

    def __init__(self, name: str, valid: list[str], field: str = "model") -> None:
        super().__init__(
            f"unknown strategy {name!r}; valid names: {', '.join(sorted(valid))}", field=field
        )
        self.name = name
        self.valid = sorted(valid)


class AuthenticationError(ConductorError):
    """A missing or unknown API key."""


class PermissionDeniedError(ConductorError):
    """The client may not do this (admin endpoints)."""


class NotFoundError(ConductorError):
    """An unknown request id (or other resource)."""


class ConflictError(ConductorError):
    """The request clashes with one already made (a client's request id used twice)."""


class RateLimitedError(ConductorError):
    """A client limit was hit."""

    def __init__(self, message: str, retry_after_s: float, limit: str) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.limit = limit


class NoStrategyAvailableError(ConductorError):
    """No strategy is eligible (all circuits open or none configured for the task)."""


class ProviderError(ConductorError):
    """An upstream call failed; the upstream's message is kept."""

    retryable: bool = False

    def __init__(self, message: str, *, provider: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.provider = provider
        self.status = status


class ProviderTimeoutError(ProviderError):
    retryable = True


class CircuitOpenError(ProviderError):
    """Not sent: the model's circuit is half-open and its one trial call is in flight (or
    open). Not the upstream's failure; the executor falls back."""


class ProviderRateLimitedError(ProviderError):
    retryable = True

    def __init__(
        self, message: str, *, provider: str = "", status: int | None = 429,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message, provider=provider, status=status)
        self.retry_after_s = retry_after_s


class ProviderServerError(ProviderError):
    retryable = True


class ProviderBadRequestError(ProviderError):
    pass


class ProviderAuthError(ProviderError):
    pass


class ProviderStreamError(ProviderError):
    retryable = True


class BatchItemError(ProviderError):
    """The batch call worked but this item's answer could not be parsed; it falls back."""


class JudgeError(ConductorError):
    """The judge's reply carried no score; counted as a judge failure, never as a zero."""


class StorageError(ConductorError):
    """The store cannot be opened or written; the message names the file."""


class SchemaVersionError(StorageError):
    """The database was written by a newer Conductor."""


def describe(exc: BaseException) -> str:
    """How a failed call is recorded in traces and logs: the exception's class and message."""
    return f"{type(exc).__name__}: {exc}"
