"""The one place that maps errors to HTTP responses (OpenAI-style JSON error bodies)."""

from __future__ import annotations

import logging
import math
import re
from typing import Any

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from conductor.errors import (
    AuthenticationError,
    CircuitOpenError,
    ConductorError,
    ConflictError,
    InvalidRequestError,
    NoStrategyAvailableError,
    NotFoundError,
    PermissionDeniedError,
    ProviderAuthError,
    ProviderBadRequestError,
    ProviderError,
    ProviderRateLimitedError,
    ProviderTimeoutError,
    RateLimitedError,
    StorageError,
    UnknownStrategyError,
)

log = logging.getLogger("conductor.service")

_AT = re.compile(r" - at `\$\.?([^`]*)`")


def error_body(message: str, type_: str, param: str | None = None,
               code: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code, **extra}}


# (error class, HTTP status, OpenAI error type, code); the first match wins, so subclasses
# come before their parents.
_STATUS: tuple[tuple[type[ConductorError], int, str, str | None], ...] = (
    (AuthenticationError, 401, "authentication_error", None),
    (PermissionDeniedError, 403, "permission_error", None),
    (UnknownStrategyError, 404, "invalid_request_error", "model_not_found"),
    (InvalidRequestError, 400, "invalid_request_error", None),
    (NotFoundError, 404, "not_found_error", None),
    (ConflictError, 409, "invalid_request_error", "request_id_in_use"),
    (RateLimitedError, 429, "rate_limit_error", None),  # code: the limit's name
    (NoStrategyAvailableError, 503, "service_unavailable", "no_strategy_available"),
    (ProviderBadRequestError, 400, "invalid_request_error", "upstream_rejected"),
    (ProviderRateLimitedError, 429, "rate_limit_error", "upstream_rate_limited"),
    (ProviderTimeoutError, 504, "upstream_error", "upstream_timeout"),
    (ProviderAuthError, 502, "upstream_error", "upstream_auth"),
    (CircuitOpenError, 503, "service_unavailable", "circuit_open"),
    (ProviderError, 502, "upstream_error", "upstream_error"),
    (StorageError, 503, "service_unavailable", "storage"),
)


def status_of(exc: ConductorError) -> tuple[int, str, str | None]:
    """(HTTP status, OpenAI error type, code) for a Conductor error."""
    if isinstance(exc, RateLimitedError):
        return 429, "rate_limit_error", exc.limit
    for cls, status, type_, code in _STATUS:
        if isinstance(exc, cls):
            return status, type_, code
    return 500, "server_error", None


def conductor_error_response(exc: ConductorError) -> Response[dict[str, Any]]:
    status, type_, code = status_of(exc)
    headers: dict[str, str] = {}
    retry = getattr(exc, "retry_after_s", None)
    if status == 429 and retry is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
    param = getattr(exc, "field", None)
    extra: dict[str, Any] = {}
    if isinstance(exc, UnknownStrategyError):
        extra["valid"] = exc.valid
    if status >= 500:
        log.warning("%s: %s", type(exc).__name__, exc)
    return Response(error_body(str(exc), type_, param, code, **extra), status_code=status,
                    headers=headers)


def _validation_message(exc: ValidationException) -> tuple[str, str | None]:
    extra = exc.extra
    details = extra if isinstance(extra, list) else [extra] if extra else []
    for d in details:
        if isinstance(d, dict) and d.get("message"):
            msg = str(d["message"])
            m = _AT.search(msg)
            field = m.group(1) if m else (d.get("key") or None)
            return msg, field
    return str(exc.detail), None


def handle_exception(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """Every error leaves the service as JSON; bad input is a 4xx naming what is wrong."""
    if isinstance(exc, ConductorError):
        return conductor_error_response(exc)
    if isinstance(exc, ValidationException):
        msg, field = _validation_message(exc)
        return Response(error_body(msg, "invalid_request_error", field), status_code=400)
    if isinstance(exc, HTTPException):
        type_ = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return Response(error_body(str(exc.detail), type_), status_code=exc.status_code,
                        headers=exc.headers or {})
    if isinstance(exc, RecursionError):  # the JSON decoder's depth limit: hostile input
        return Response(error_body("request body: JSON nested too deeply", "invalid_request_error",
                                   "body"), status_code=400)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return Response(error_body("internal error", "server_error"), status_code=500)
