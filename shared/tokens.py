"""Access tokens for one identity and scope: cached, fetched once, refreshed early.

azure-identity caches tokens, but concurrent cold calls each go to the identity
endpoint; a burst of invocations on a new instance would send one token request
per invocation. `TokenSource` runs at most one fetch at a time, as a task that
every waiter awaits (so all of them get its token, or its error), and never
makes a caller wait while the token in hand is still usable:

- early refresh runs in the background; the call that starts it is served the
  current token, and a failed refresh keeps it (tried again after a pause);
- a renewal after APIM's 401 is awaited only by the calls that were refused;
  everyone else keeps the current token until it expires;
- renewals are bounded: at most one per `renew_interval`, because in Azure the
  platform hands back the same cached token for up to 24 hours anyway.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
from azure.core.credentials import AccessTokenInfo, TokenRequestOptions
from azure.core.credentials_async import AsyncSupportsTokenInfo
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import CredentialUnavailableError
from azure.identity.aio import ManagedIdentityCredential

from . import telemetry
from .errors import AppError, ConnectionFailure, TokenError, connection_failure
from .redaction import known_secrets
from .settings import setting_name

__all__ = ["FETCH_TIMEOUT_SECONDS", "MIN_REMAINING_SECONDS", "REFRESH_MARGIN_SECONDS", "REFRESH_RETRY_SECONDS",
           "RENEW_INTERVAL_SECONDS", "Renewal", "TokenSource", "describe_token", "no_token_in_time", "token_error",
           "token_report"]

logger = logging.getLogger(__name__)

# Refresh this long before expiry (at most half the lifetime) when the credential gives no refresh_on.
REFRESH_MARGIN_SECONDS = 300
# Never use a token that expires sooner than this: it could expire in flight.
MIN_REMAINING_SECONDS = 30
# After a failed early refresh, wait this long before the next try (azure-identity waits 30 s too).
REFRESH_RETRY_SECONDS = 30
# At most one renewal after a 401 per identity in this interval: a persistent 401 (wrong audience,
# a policy that rejects the identity) must not cost a token request per invocation.
RENEW_INTERVAL_SECONDS = 300
# One fetch from the identity endpoint, azure-identity's retries and their waits included. azure-identity
# waits out whatever Retry-After the endpoint sends (an hour, say), and every caller of the identity
# would wait on that one fetch. Under the APIM call's 60 s budget, so that a call reports the token's failure.
FETCH_TIMEOUT_SECONDS = 30.0

TIME_CLAIMS = ("exp", "nbf", "iat")  # seconds since the epoch (RFC 7519 NumericDate)
NON_SECRET_CLAIMS = ("aud", "iss", "tid", "roles", "appid", "azp", "oid", "idtyp", "ver", "exp", "nbf", "iat")


def describe_token(token: str) -> dict[str, Any]:
    """The token's non-secret claims, unverified: for hints and health output only.

    APIM validates the signature; we only read what we were given to explain a refusal.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    shown = {name: claims[name] for name in NON_SECRET_CLAIMS if name in claims}
    # A time claim that is not an instant (a string, NaN, Infinity, 1e400, past year 9999: JSON parsers take
    # them all) is left out, as if absent: it would break the arithmetic, and the JSON of what shows it.
    return {name: value for name, value in shown.items() if name not in TIME_CLAIMS or _instant(value)}


def _instant(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and _iso(value) is not None


def token_report(token: AccessTokenInfo, now: float | None = None) -> dict[str, Any]:
    """What `health?probe=token` shows: the non-secret claims, and how old the token is.

    In Azure the platform hands out one cached token per identity for up to 24 hours:
    a role assigned after `issued_at` is not in it, and the age says so at a glance.
    """
    now = time.time() if now is None else now
    claims = describe_token(token.token)
    issued = claims.get("iat")
    report: dict[str, Any] = {**claims, "expires_at": _iso(token.expires_on),
                              "expires_in_seconds": int(token.expires_on - now)}
    if issued is not None:  # an instant: describe_token leaves out any other
        report["issued_at"] = _iso(issued)
        report["age_seconds"] = int(now - issued)
    return report


def _iso(timestamp: float) -> str | None:
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):  # NaN, Infinity (1e400 parses as it), past year 9999
        return None


class Renewal(enum.Enum):
    """How the last renewal after a 401 went: what the hint tells the caller."""

    NONE = "none"  # no renewal yet
    RENEWED = "renewed"  # a different token came back
    UNCHANGED = "unchanged"  # the endpoint handed back the token APIM refused (the platform's cache)
    FAILED = "failed"  # the identity endpoint failed


class TokenSource:
    """Tokens for (credential, scope), with one fetch in flight, early refresh and bounded renewal."""

    def __init__(self, credential: AsyncSupportsTokenInfo, scope: str, *, client_id: str | None,
                 clock: Callable[[], float] = time.time, renew_interval: float = RENEW_INTERVAL_SECONDS,
                 connection: str | None = None, identity_setting: str | None = None,
                 fetch_timeout: float = FETCH_TIMEOUT_SECONDS) -> None:
        self.credential = credential
        self.scope = scope
        self.fetch_timeout = fetch_timeout
        # The connection's setting names, for the hints of a failure (`token_error`).
        self.connection = connection
        self.identity_setting = identity_setting
        # What logs, hints and telemetry call this identity: its client ID, or "default".
        self.identity = client_id or "default"
        self.renew_interval = renew_interval
        self.renewal = Renewal.NONE  # how the last renewal went
        self._clock = clock
        self._token: AccessTokenInfo | None = None
        self._fetched_at = 0.0
        self._fetch: asyncio.Task[AccessTokenInfo] | None = None  # the fetch in flight, if any
        self._refresh_failed_at: float | None = None
        self._renewed_at: float | None = None

    @property
    def token(self) -> AccessTokenInfo | None:
        """The token in hand (usable or not), without fetching one."""
        return self._token

    async def get(self) -> AccessTokenInfo:
        """A token valid for at least MIN_REMAINING_SECONDS."""
        token = self._token
        if token is not None and self._usable(token):
            if self._fetch is None and self._needs_refresh(token) and self._may_refresh():
                self._start_fetch()  # in the background: this call goes on with the current token
            telemetry.record_token(self.identity, self.scope, source="cache")
            return token
        return await self._wait_for(self._start_fetch())

    async def renew(self, rejected: str) -> AccessTokenInfo | None:
        """A token other than `rejected` (after APIM answered 401), or None; `renewal` says why not.

        Only the refused calls wait for it: `get()` goes on serving the current token
        while it is usable. At most one renewal per `renew_interval`.
        """
        current = self._token
        if current is not None and current.token != rejected:
            return current  # another call renewed it already
        fetch = self._fetch  # in flight: a renewal, or an early refresh, which will do as one
        if fetch is None:
            now = self._clock()
            if self._renewed_at is not None and now - self._renewed_at < self.renew_interval:
                return None  # `renewal` still says how the last one went
            self._renewed_at = now
            fetch = self._start_fetch(bypass_cache=True)
        try:
            token = await self._wait_for(fetch)
        except AppError as error:
            logger.warning("Token renewal for identity %s after APIM's 401 failed: %s", self.identity, error.message)
            self.renewal = Renewal.FAILED
            return None
        self.renewal = Renewal.UNCHANGED if token.token == rejected else Renewal.RENEWED
        return token if self.renewal is Renewal.RENEWED else None

    def _start_fetch(self, *, bypass_cache: bool = False) -> asyncio.Task[AccessTokenInfo]:
        """The fetch in flight, started if there is none."""
        if self._fetch is None:
            self._fetch = asyncio.create_task(self._fetch_token(bypass_cache=bypass_cache))
            self._fetch.add_done_callback(self._fetch_ended)
        return self._fetch

    @staticmethod
    async def _wait_for(fetch: asyncio.Task[AccessTokenInfo]) -> AccessTokenInfo:
        # Shielded: a waiter that is cancelled (its invocation timed out) must not cancel
        # the fetch that the other waiters, and the next callers, are counting on.
        return await asyncio.shield(fetch)

    def _fetch_ended(self, fetch: asyncio.Task[AccessTokenInfo]) -> None:
        if self._fetch is fetch:
            self._fetch = None
        if not fetch.cancelled():
            fetch.exception()  # retrieved: an early refresh nobody awaited must not log "never retrieved"

    async def _fetch_token(self, *, bypass_cache: bool) -> AccessTokenInfo:
        current = self._token
        with telemetry.token_span(self.identity, self.scope) as span:
            limit = asyncio.timeout(self.fetch_timeout)
            try:
                async with limit:
                    token = await self.credential.get_token_info(self.scope, options=self._options(bypass_cache))
            except Exception as exc:
                error = (no_token_in_time(f"{self.fetch_timeout:g} s") if limit.expired() else
                         token_error(exc, connection=self.connection, identity_setting=self.identity_setting))
            else:
                unusable = _unusable(token, self._clock())
                if unusable is None:
                    span.set_outcome("success", token)
                    known_secrets.add_token(token.token, token.expires_on)  # before any request carries it
                    self._token, self._fetched_at, self._refresh_failed_at = token, self._clock(), None
                    return token
                error = unusable
            # Raised here, outside the except block, so the library's exception (whose text may
            # quote the endpoint's answer) is not even chained to ours as __context__.
            if current is not None and self._usable(current) and not bypass_cache:
                logger.warning("Token refresh for identity %s failed (%s); using the current token.",
                               self.identity, error.message)
                span.set_outcome("stale", current)
                self._refresh_failed_at = self._clock()
            else:
                span.set_failure(error)
            raise error

    def _options(self, bypass_cache: bool) -> TokenRequestOptions | None:
        if bypass_cache and isinstance(self.credential, ManagedIdentityCredential):
            return {"claims": ""}  # any claims value, even empty, makes azure-identity skip its own cache
        return None

    def _may_refresh(self) -> bool:
        failed_at = self._refresh_failed_at
        return failed_at is None or self._clock() - failed_at >= REFRESH_RETRY_SECONDS

    def _needs_refresh(self, token: AccessTokenInfo) -> bool:
        margin = min(REFRESH_MARGIN_SECONDS, (token.expires_on - self._fetched_at) / 2)
        refresh_at = token.refresh_on or (token.expires_on - margin)
        return self._clock() >= refresh_at

    def _usable(self, token: AccessTokenInfo) -> bool:
        return token.expires_on - self._clock() > MIN_REMAINING_SECONDS


# --- what azure-identity's failures mean to the caller -------------------------------------------

_IDENTITY_UNREACHABLE_HINT = (
    "In Azure the platform runs this endpoint (IDENTITY_ENDPOINT, or IMDS on a VM) and such failures are "
    "usually brief: retry. On a laptop, check that `python -m devstack up` is running and that "
    "IDENTITY_ENDPOINT is its current value.")


def _unusable(token: AccessTokenInfo, now: float) -> TokenError | None:
    """Why a token the credential handed back cannot be used, or None. Its expiry decides every refresh:
    one that is not a time (an int past what a float holds, NaN) would fail each later call instead."""
    if not token.token:
        return _not_a_token_response("no access_token")
    try:
        expires_on = float(token.expires_on)
    except (TypeError, ValueError, OverflowError):
        expires_on = math.nan
    if not math.isfinite(expires_on):
        return _not_a_token_response("its expiry is not a time")
    if expires_on <= now:
        when = _iso(expires_on) or expires_on
        return TokenError(f"The identity endpoint handed out a token that expired at {when}, before it arrived.",
                          hint="Its clock and this machine's disagree: on a laptop, check this machine's clock; "
                               "in Azure, retry.")
    return None


def _not_a_token_response(detail: str) -> TokenError:
    return TokenError(f"The identity endpoint's answer was not a token response ({detail}).",
                      hint="In Azure this is transient: retry.")


def no_token_in_time(limit: str) -> TokenError:
    """No token within `limit` ("30 s", "the call's time limit"): the endpoint was slow, or asked to wait."""
    return TokenError(f"No token from the managed-identity endpoint within {limit} (azure-identity's retries, "
                      "and any wait the endpoint asked for, included).", hint=_IDENTITY_UNREACHABLE_HINT, status=504)


def token_error(exc: BaseException, *, connection: str | None = None,
                identity_setting: str | None = None) -> TokenError:
    """An azure-identity (or azure-core transport) failure to get a token, in our words.

    Only exception types, status codes and Entra's error codes decide: library
    messages can echo the endpoint's answer, so they are never copied. Hints name
    `connection`'s settings; `identity_setting` is the one that chose the identity
    (default: the connection's MANAGED_IDENTITY_CLIENT_ID).
    """
    if isinstance(exc, TokenError):
        return exc
    read_identity = setting_name("MANAGED_IDENTITY_CLIENT_ID", connection)
    identity = identity_setting or read_identity
    audience = setting_name("API_APP_ID_URI", connection)
    if isinstance(exc, ClientAuthenticationError) and exc.response is not None:
        # An answer came back, whatever the type says: azure-identity raises CredentialUnavailableError
        # for an answer that is not JSON too (an HTML error page), and its status tells what it was.
        return _identity_failure(exc, identity, audience)
    if isinstance(exc, ValueError | TypeError | KeyError | OverflowError) and _raised_in(exc, "azure.identity"):
        # azure-identity reads the answer's fields itself (`int(expires_on)`), and raises what Python raises.
        return _not_a_token_response("a field azure-identity could not read")
    if isinstance(exc, CredentialUnavailableError):
        # Without the write setting, writes use the read identity: only with neither set is it `az login`.
        unset = identity if identity == read_identity else f"{read_identity} and {identity}"
        return TokenError(
            "The managed identity is not available here.",
            hint="In Azure, check that the identity is assigned to the Function App and that "
            f"{identity} is its client ID. On a laptop, run `python -m devstack up` "
            f"and use its settings, or unset {unset} to use your `az login`.",
        )
    if isinstance(exc, ClientAuthenticationError):
        return _identity_failure(exc, identity, audience)
    failure = connection_failure(exc)
    if failure is ConnectionFailure.TIMEOUT:
        return TokenError("The managed-identity endpoint did not answer in time.", hint=_IDENTITY_UNREACHABLE_HINT,
                          status=504)
    if failure is ConnectionFailure.NOT_CONNECTED:
        return TokenError("Could not connect to the managed-identity endpoint.", hint=_IDENTITY_UNREACHABLE_HINT)
    if failure is ConnectionFailure.BROKEN:
        return TokenError("The connection to the managed-identity endpoint failed before a complete answer.",
                          hint=_IDENTITY_UNREACHABLE_HINT)
    if failure is ConnectionFailure.MALFORMED:
        return _not_a_token_response("not valid HTTP")
    return TokenError("Unexpected error while getting an access token.")


def _raised_in(exc: BaseException, package: str) -> bool:
    """Whether the innermost frame of `exc`'s traceback is in `package` (not, say, in urllib parsing a URL)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = str(tb.tb_frame.f_globals.get("__name__", "")) if tb is not None else ""
    return module == package or module.startswith(package + ".")


def _identity_failure(exc: ClientAuthenticationError, identity: str, audience: str) -> TokenError:
    # azure-identity raises this one type for a refusal, a failing endpoint and an unreadable
    # answer; the HTTP status it carries (when there was a response) tells them apart.
    status = exc.status_code if exc.response is not None else None
    if status is not None and status < 400:
        return _not_a_token_response("malformed JSON or no access_token")
    if status == 500:
        # App Service answers this one vague 500 for any token Entra refuses, as well as for its own failures.
        return TokenError("The identity endpoint failed with HTTP 500, also after azure-identity's retries.",
                          hint="If it persists, Entra ID is refusing the token and App Service does not say why: "
                               f"check that {audience} names the API's app registration and that the identity "
                               "has an app role on it (the API requires one). Otherwise it is transient: retry.")
    if status is not None and status > 500:
        return TokenError(f"The identity endpoint failed with HTTP {status}, also after azure-identity's retries.",
                          hint="In Azure this is usually transient: retry.")
    return TokenError("The identity endpoint refused to issue a token.",
                      hint=_identity_refusal_hint(exc, identity, audience))


def _identity_refusal_hint(exc: ClientAuthenticationError, identity: str, audience: str) -> str:
    text = str(getattr(exc, "message", "") or "")
    if "AADSTS500011" in text:  # "The resource principal named … was not found in the tenant"
        return f"Entra ID has no app with this App ID URI in the tenant: check {audience}."
    if "AADSTS501051" in text:  # "Application … is not assigned to a role for the application …"
        return ("The identity has no app role on the API, and the API requires one before Entra ID issues a "
                "token: assign it a role (an appRoleAssignedTo on the API's service principal), then retry.")
    if "No User Assigned" in text or "Identity not found" in text:
        return (f"No managed identity with that client ID is assigned to this app: check "
                f"{identity} against the identity's client ID (not its principal ID).")
    return f"Check the identity assignment and {audience}."
