"""Every error the app reports: one class per thing the caller can act on.

    AppError                        base: an HTTP status, a code, a message, a hint, headers
    ├── UnexpectedError             500 internal_error: a bug; only its type is logged
    ├── ConfigurationError          500 configuration_error: app settings, each problem named
    ├── BadRequest                  400 bad_request: the caller's path, query or body
    │   └── BodyTooLarge            413 body_too_large
    ├── TokenError                  502/504 token_error: no token from the managed-identity endpoint
    ├── UpstreamError               the upstream's status, upstream_error: APIM or the API answered 5xx
    │   ├── AccessDenied            401/403 access_denied: token, app role or subscription key
    │   ├── UnsupportedMediaType    415 unsupported_media_type
    │   └── Throttled               429 throttled
    └── UpstreamUnavailable         502 upstream_unavailable: APIM unreachable, or the connection failed
        └── UpstreamTimeout         504 upstream_timeout

The libraries' own exceptions become these where the library is called: credential
errors in `shared.tokens`, transport errors in `shared.apim`. Messages never
contain tokens, keys or the identity header: they are built from our own words,
status codes and non-secret claims only.
"""

from __future__ import annotations

import asyncio
import enum
from typing import Any

import aiohttp
from azure.core.exceptions import (
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)

__all__ = [
    "AccessDenied",
    "AppError",
    "BadRequest",
    "BodyTooLarge",
    "ConfigurationError",
    "ConnectionFailure",
    "Throttled",
    "TokenError",
    "UnexpectedError",
    "UnsupportedMediaType",
    "UpstreamError",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "connection_failure",
]


class AppError(Exception):
    """Base class: something went wrong that the caller should hear about."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if status is not None:
            self.status = status
        # Response headers the caller gets with the error (Retry-After).
        self.headers: dict[str, str] = dict(headers or {})

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            error["hint"] = self.hint
        return {"error": error}

    def __str__(self) -> str:
        return f"{self.message} Hint: {self.hint}" if self.hint else self.message


class UnexpectedError(AppError):
    """Anything no other class anticipated: a bug. The original exception's text is never shown."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str = "Unexpected error.", *, cause: type[BaseException] | None = None) -> None:
        super().__init__(message)
        # Only the type of what went wrong is kept for the log: its text could quote anything.
        self.cause_type = cause.__name__ if cause is not None else None


class ConfigurationError(AppError):
    """An app setting is missing or malformed; `problems` names each one."""

    status = 500
    code = "configuration_error"

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("The function app is misconfigured: " + " ".join(problems))

    def to_json(self) -> dict[str, Any]:
        body = super().to_json()
        body["error"]["problems"] = self.problems
        return body


class BadRequest(AppError):
    """The caller's request cannot be forwarded as it is (bad path, query or body)."""

    status = 400
    code = "bad_request"


class BodyTooLarge(BadRequest):
    """The request body is larger than the forwarding limit."""

    status = 413
    code = "body_too_large"


class TokenError(AppError):
    """No access token could be obtained from the managed-identity endpoint."""

    status = 502
    code = "token_error"


class UpstreamError(AppError):
    """APIM (or the API behind it) answered with an error status (5xx; subclasses for refusals)."""

    code = "upstream_error"

    def __init__(self, message: str, *, status: int, hint: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, hint=hint, status=status, headers=headers)


class AccessDenied(UpstreamError):
    """APIM refused the call with 401 or 403 (token, role or subscription key)."""

    code = "access_denied"


class UnsupportedMediaType(UpstreamError):
    """The API refused the request body's content type (415)."""

    code = "unsupported_media_type"


class Throttled(UpstreamError):
    """APIM answered 429, after the retries we allow or with a Retry-After too long to wait for."""

    code = "throttled"


class UpstreamUnavailable(AppError):
    """APIM could not be reached, or the connection failed before a full answer."""

    status = 502
    code = "upstream_unavailable"


class UpstreamTimeout(UpstreamUnavailable):
    """APIM did not answer within the timeout."""

    status = 504
    code = "upstream_timeout"


class ConnectionFailure(enum.Enum):
    """What went wrong with an HTTP exchange, as far as the caller can act on it."""

    TIMEOUT = "did not answer in time"
    NOT_CONNECTED = "could not be reached"
    BROKEN = "failed before a complete answer"
    MALFORMED = "answered with something that is not valid HTTP"  # a bad status line or chunk, say


def connection_failure(exc: BaseException) -> ConnectionFailure | None:
    """Which connection failure an azure-core, aiohttp or asyncio exception is; None if it is none.

    Used by both callers of HTTP libraries (`shared.tokens`, `shared.apim`), each of
    which says it in its own words.
    """
    if isinstance(exc, ServiceRequestTimeoutError | ServiceResponseTimeoutError | asyncio.TimeoutError):
        return ConnectionFailure.TIMEOUT
    # aiohttp's parser refuses an answer with ClientResponseError itself (its subclasses are other failures).
    if type(getattr(exc, "inner_exception", exc)) is aiohttp.ClientResponseError:
        return ConnectionFailure.MALFORMED
    if isinstance(exc, ServiceRequestError):
        # azure-core's aiohttp transport raises ServiceRequestError for any failure before a response,
        # a connection closed after the request went out included: that one is not "could not connect".
        inner = getattr(exc, "inner_exception", None)
        if isinstance(inner, aiohttp.ClientError) and not isinstance(inner, aiohttp.ClientConnectorError):
            return ConnectionFailure.BROKEN
        return ConnectionFailure.NOT_CONNECTED  # only aiohttp errors can say more: else azure-core's word
    if isinstance(exc, aiohttp.ClientConnectorError):
        return ConnectionFailure.NOT_CONNECTED
    # azure-core raises IncompleteReadError (not a ServiceResponseError) when the connection
    # drops while the body is read: the same failure for the caller.
    if isinstance(exc, ServiceResponseError | IncompleteReadError | aiohttp.ClientError):
        return ConnectionFailure.BROKEN
    return None
