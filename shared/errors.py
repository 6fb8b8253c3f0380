"""Every error the app reports, and the one place lower-level failures become them.

Each class says when it happens; each instance carries the HTTP status the
caller sees, a message, and (where we can tell) a hint that names the likely
cause. Messages never contain tokens, keys or the identity header: they are
built from our own words, status codes and non-secret claims only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from azure.core.exceptions import (
    ClientAuthenticationError,
    IncompleteReadError,
    ServiceRequestError,
    ServiceRequestTimeoutError,
    ServiceResponseError,
    ServiceResponseTimeoutError,
)
from azure.identity import CredentialUnavailableError


class AppError(Exception):
    """Base class: something went wrong that the caller should hear about."""

    status: int = 500
    code: str = "internal_error"

    def __init__(self, message: str, *, hint: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if status is not None:
            self.status = status

    def to_json(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            error["hint"] = self.hint
        return {"error": error}

    def __str__(self) -> str:
        return f"{self.message} Hint: {self.hint}" if self.hint else self.message


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


class RequestError(AppError):
    """The caller's request cannot be forwarded as it is (bad path, query or body)."""

    status = 400
    code = "bad_request"


class BodyTooLarge(RequestError):
    """The request body is larger than the forwarding limit."""

    status = 413
    code = "body_too_large"


class TokenError(AppError):
    """No access token could be obtained from the managed-identity endpoint."""

    status = 502
    code = "token_error"


class UpstreamError(AppError):
    """APIM (or the API behind it) answered with an error status."""

    code = "upstream_error"

    def __init__(self, message: str, *, status: int, hint: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, hint=hint, status=status)
        self.headers = headers or {}


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


def map_exception(exc: BaseException, *, target: str = "APIM") -> AppError:
    """Turn an azure-identity, azure-core or aiohttp failure into an AppError.

    Only exception *types* and our own words reach the message: library
    messages can echo request details, so they are not copied.
    """
    if isinstance(exc, AppError):
        return exc
    if isinstance(exc, CredentialUnavailableError):
        return TokenError(
            "The managed identity is not available here.",
            hint="In Azure, check that the identity is assigned to the Function App and that "
            "MANAGED_IDENTITY_CLIENT_ID is its client ID. On a laptop, run `python -m devstack up` "
            "and use its settings, or unset MANAGED_IDENTITY_CLIENT_ID to use your `az login`.",
        )
    if isinstance(exc, ClientAuthenticationError):
        return _identity_failure(exc)
    if isinstance(exc, ServiceRequestTimeoutError | ServiceResponseTimeoutError | asyncio.TimeoutError):
        return UpstreamTimeout(f"{target} did not answer in time.")
    if isinstance(exc, ServiceRequestError) and not _failed_to_connect(exc):
        # azure-core's aiohttp transport raises ServiceRequestError for any failure before a response,
        # a connection closed after the request went out included: that one is not "could not connect".
        return UpstreamUnavailable(f"The connection to {target} failed before a complete answer.")
    if isinstance(exc, ServiceRequestError):
        return UpstreamUnavailable(f"Could not connect to {target}.",
                                   hint="Check APIM_BASE_URL and that the gateway is reachable.")
    # azure-core raises IncompleteReadError (not a ServiceResponseError) when the connection
    # drops while the body is read: the same failure for the caller.
    if isinstance(exc, ServiceResponseError | IncompleteReadError | aiohttp.ClientError):
        return UpstreamUnavailable(f"The connection to {target} failed before a complete answer.")
    return AppError("Unexpected error while calling the API.")


def _failed_to_connect(exc: ServiceRequestError) -> bool:
    inner = getattr(exc, "inner_exception", None)
    # Only aiohttp errors can say more; anything else is taken at azure-core's word.
    return not isinstance(inner, aiohttp.ClientError) or isinstance(inner, aiohttp.ClientConnectorError)


IDENTITY_ENDPOINT = "the managed-identity endpoint"
_IDENTITY_UNREACHABLE_HINT = (
    "In Azure the platform runs this endpoint (IDENTITY_ENDPOINT, or IMDS on a VM) and such failures are "
    "usually brief: retry. On a laptop, check that `python -m devstack up` is running and that "
    "IDENTITY_ENDPOINT is its current value.")


def map_token_exception(exc: BaseException) -> AppError:
    """Like `map_exception`, for a failure to get a token: always a TokenError.

    Connection failures and timeouts of the identity endpoint must not read as
    APIM's ("Could not connect to APIM" would send the reader to the wrong place).
    """
    error = map_exception(exc, target=IDENTITY_ENDPOINT)
    if isinstance(error, TokenError):
        return error
    if isinstance(error, UpstreamUnavailable):  # includes UpstreamTimeout
        return TokenError(error.message, hint=_IDENTITY_UNREACHABLE_HINT, status=error.status)
    if type(error) is AppError:
        return TokenError("Unexpected error while getting an access token.")
    return error


def _identity_failure(exc: ClientAuthenticationError) -> TokenError:
    # azure-identity raises this one type for a refusal, a failing endpoint and an unreadable
    # answer; the HTTP status it carries (when there was a response) tells them apart.
    status = exc.status_code if exc.response is not None else None
    if status is not None and status < 400:
        return TokenError("The identity endpoint's answer was not a token response (malformed JSON or no "
                          "access_token).", hint="In Azure this is transient: retry.")
    if status == 500:
        # App Service answers this one vague 500 for any token Entra refuses, as well as for its own failures.
        return TokenError("The identity endpoint failed with HTTP 500, also after azure-identity's retries.",
                          hint="If it persists, Entra ID is refusing the token and App Service does not say why: "
                               "check that API_APP_ID_URI names the API's app registration and that the identity "
                               "has an app role on it (the API requires one). Otherwise it is transient: retry.")
    if status is not None and status > 500:
        return TokenError(f"The identity endpoint failed with HTTP {status}, also after azure-identity's retries.",
                          hint="In Azure this is usually transient: retry.")
    return TokenError("The identity endpoint refused to issue a token.", hint=_identity_refusal_hint(exc))


def _identity_refusal_hint(exc: ClientAuthenticationError) -> str:
    text = str(getattr(exc, "message", "") or "")
    if "AADSTS500011" in text:  # "The resource principal named … was not found in the tenant"
        return "Entra ID has no app with this App ID URI in the tenant: check API_APP_ID_URI."
    if "AADSTS501051" in text:  # "Application … is not assigned to a role for the application …"
        return ("The identity has no app role on the API, and the API requires one before Entra ID issues a "
                "token: assign it a role (an appRoleAssignedTo on the API's service principal), then retry.")
    if "No User Assigned" in text or "Identity not found" in text:
        return ("No managed identity with that client ID is assigned to this app: check "
                "MANAGED_IDENTITY_CLIENT_ID against the identity's client ID (not its principal ID).")
    return "Check the identity assignment and API_APP_ID_URI."
