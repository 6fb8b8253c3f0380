"""The APIM client: one aiohttp session, azure-core policies, typed errors.

Each identity gets its own azure-core pipeline (its token policy differs); all
pipelines share one aiohttp session, so connections to the gateway are kept
alive and reused across invocations.

    CallDeadlinePolicy      the whole call bounded: retries, waits, token renewal (shared.deadline)
    WriteSafeRetryPolicy    azure-core's retry (Retry-After, backoff), minus unsafe write retries
    ApimAuthorizationPolicy token from TokenSource, Ocp-Apim-Subscription-Key and a User-Agent that names the
                            template in APIM's logs; after APIM's 401 one renewal and one resend
    AttemptDeadlinePolicy   each send bounded, body included (the transport has no per-read timeout)
    DebugLoggingPolicy      azure-core's HttpLoggingPolicy (it redacts headers and query values), while DEBUG is on
    DependencySpanPolicy    the HTTP dependency span of each request sent, `traceparent` propagated (shared.tracing)

Every policy runs on every call, so each one earns its place (`benchmarks/` measures
the whole pipeline against a bare aiohttp request). Transport failures become
typed errors here (`_transport_error`), the only place that calls aiohttp and azure-core.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import re
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from azure.core.pipeline import AsyncPipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy, AsyncRetryPolicy, HttpLoggingPolicy
from azure.core.pipeline.transport import AioHttpTransport, HttpRequest

from . import hints, telemetry
from .deadline import CONTEXT_KEY as DEADLINE_KEY
from .deadline import AttemptDeadlinePolicy, CallDeadline, CallDeadlinePolicy
from .errors import (
    AccessDenied,
    AppError,
    ConfigurationError,
    ConnectionFailure,
    Throttled,
    UnexpectedError,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnavailable,
    connection_failure,
)
from .paths import build_url
from .redaction import known_secrets, redact_exact
from .settings import Settings, is_loopback
from .tokens import TokenSource, describe_token, no_token_in_time
from .tracing import DependencySpanPolicy

__all__ = ["ApimAuthorizationPolicy", "ApimClient", "ApimResponse", "DebugLoggingPolicy", "Timeouts",
           "WriteSafeRetryPolicy", "new_session", "retry_after_seconds"]

logger = logging.getLogger(__name__)

USER_AGENT = "functions-apim-managed-identity/0.1"
SUBSCRIPTION_KEY_HEADER = "Ocp-Apim-Subscription-Key"
# azure-core logs each request and response (headers redacted) at INFO by default. The
# Functions worker sets the root logger to INFO and ships every record to the host, so that
# would be several log lines per call in App Insights, and formatting them costs more CPU
# than the rest of the pipeline; each call is already an HTTP dependency span. At DEBUG the
# lines are there when wanted: PYTHON_ENABLE_DEBUG_LOGGING=1 (the worker's switch) or
# logging.getLogger("azure.core.pipeline.policies.http_logging_policy").setLevel(logging.DEBUG).
HTTP_LOGGING_LEVEL = logging.DEBUG
# The 4xx answers a retry can fix: request timeout and throttling.
RETRYABLE_CLIENT_ERRORS = (408, 429)
# Response headers worth passing back to the caller; of a list-valued one, every line (RFC 9110 §5.3).
PASSED_HEADERS = ("Location", "ETag", "Retry-After", "Cache-Control")
_LIST_HEADERS = frozenset({"Cache-Control"})
# A header value passed back: visible ASCII, spaces and tabs inside (RFC 9110's field-value without obs-text).
# aiohttp hands over any bytes, undecodable ones as surrogates: such a value is dropped, never repaired.
_FIELD_VALUE = re.compile(r"[\x21-\x7e](?:[\t\x20-\x7e]*[\x21-\x7e])?")
# Where azure-core looks for a wait, in its order (the -ms ones in milliseconds).
RETRY_AFTER_HEADERS = (("retry-after", 1.0), ("retry-after-ms", 0.001), ("x-ms-retry-after-ms", 0.001))
_T = TypeVar("_T")


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0  # per attempt, from the request (connecting included) to the last byte of the answer
    total: float = 60.0  # the whole call, retries included; Functions' HTTP limit is 230 s
    max_retry_after: float = 10.0  # longer waits are the caller's to decide


@dataclass
class ApimResponse:
    status: int
    body: bytes
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)
    attempts: int = 1  # sends by the retry policy (a resend after a 401 is part of one attempt)
    token_claims: dict[str, Any] = field(default_factory=dict)  # of the token sent, for a 401 or 403 only


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """The wait an answer asks for (Retry-After, retry-after-ms), or None; a value that does not parse is absent.

    azure-core's own parser raises on `Retry-After: soon` or an invalid date, which
    would turn an odd upstream answer into an unexpected error.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    for name, unit in RETRY_AFTER_HEADERS:
        seconds = _parse_wait(lowered.get(name, ""), unit)
        if seconds is not None:
            return seconds
    return None


def _parse_wait(value: str, unit: float) -> float | None:
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value) * unit
    except ValueError:
        if unit != 1.0:
            return None
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            return None  # an HTTP date is always GMT; a zone-less one is not an HTTP date
        seconds = when.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


class WriteSafeRetryPolicy(AsyncRetryPolicy[Any, Any]):
    """azure-core's retry, except where a write could run twice.

    azure-core retries POST/PATCH on 500/503/504; those may have reached the
    backend, so we don't. A 429 is retried for any method: it is a refusal, so
    the request was not carried out, whether APIM or the API behind it answered.
    Other 4xx are not retried, Retry-After or not, and
    Retry-After waits longer than `max_retry_after` are not slept through.
    """

    def __init__(self, *, max_retry_after: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_retry_after = max_retry_after

    def get_retry_after(self, response: PipelineResponse[Any, Any]) -> float | None:
        return retry_after_seconds(response.http_response.headers)

    def increment(self, settings: dict[str, Any], response: Any = None, error: Any = None) -> bool:
        if error is not None and connection_failure(error) is ConnectionFailure.MALFORMED:
            return False  # not a connection that failed: the same request gets the same answer
        return bool(super().increment(settings, response=response, error=error))

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse[Any, Any]) -> bool:
        status = response.http_response.status_code
        if status < 400:
            return False  # as azure-core decides too; the common case skips reading Retry-After headers
        if status > 599:
            return False  # not an HTTP status (azure-core's list of retried ones runs to 998)
        if status < 500 and status not in RETRYABLE_CLIENT_ERRORS:
            # azure-core retries any response that has a Retry-After; on a 4xx it only sets a wait
            # (APIM's quota policy answers 403 with one until the quota period renews).
            return False
        retry_after = self.get_retry_after(response)
        if retry_after is not None and retry_after > self.max_retry_after:
            return False
        if response.http_request.method.upper() in ("POST", "PATCH"):
            return bool(settings["total"]) and status == 429
        return bool(super().is_retry(settings, response))


class ApimAuthorizationPolicy(AsyncHTTPPolicy[Any, Any]):
    """Adds the identity's token; after APIM's 401 about the token, one renewal and one resend.

    Not azure-core's AsyncBearerTokenCredentialPolicy: it resends after a 401 only for a
    claims challenge (CAE), which APIM's 401 never is, and TokenSource adds the single
    fetch in flight, with its failure shared, that a burst of invocations needs. A 401
    about the subscription key is not the token's fault: it costs no token request.
    """

    def __init__(self, source: TokenSource, base_setting: str = "APIM_BASE_URL",
                 headers: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.source = source
        self.base_setting = base_setting  # the connection's name for it, in messages
        self.headers = dict(headers or {})  # the same on every request (subscription key, User-Agent)

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        url = request.http_request.url
        if not url.lower().startswith("https://") and not is_loopback(url):
            # Settings validation stops this first; should it ever get here, it is configuration, not input.
            raise ConfigurationError([f"Refusing to send a bearer token over plain HTTP: {self.base_setting} must "
                                      "use https."])
        token = await _in_time(request, self.source.get())
        if token is None:
            raise no_token_in_time("the call's time limit")
        # Set here, not by azure-core's HeadersPolicy: one pipeline step less per call (measured, benchmarks/).
        request.http_request.headers.update(self.headers)
        self._authorize(request, token.token)
        response = await self.next.send(request)
        if response.http_response.status_code == 401 and not hints.is_subscription_key_refusal(
                response.http_response.body()):
            fresh = await _in_time(request, self.source.renew(token.token))  # None, out of time: APIM's 401 stands
            if fresh is not None:
                self._authorize(request, fresh.token)
                response = await self.next.send(request)
        return response

    @staticmethod
    def _authorize(request: PipelineRequest[Any], token: str) -> None:
        request.http_request.headers["Authorization"] = f"Bearer {token}"


async def _in_time(request: PipelineRequest[Any], waiting: Awaitable[_T | None]) -> _T | None:
    """`waiting` for a token, or None if the call's budget runs out meanwhile (its timeout taken back:
    the caller says what the call was waiting for, not that APIM did not answer)."""
    try:
        return await waiting
    except asyncio.CancelledError:
        deadline: CallDeadline | None = request.context.get(DEADLINE_KEY)
        if deadline is not None and deadline.claim("call"):
            return None
        raise


class DebugLoggingPolicy(AsyncHTTPPolicy[Any, Any]):
    """azure-core's HttpLoggingPolicy at HTTP_LOGGING_LEVEL, run only while its logger is enabled for that level.

    In the pipeline as it is, azure-core would run it on every call to find out that it has nothing to log.
    """

    def __init__(self, level: int = HTTP_LOGGING_LEVEL) -> None:
        super().__init__()
        self.level = level
        self.logging = HttpLoggingPolicy(http_logging_level=level)

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        if not self.logging.logger.isEnabledFor(self.level):
            return await self.next.send(request)
        self.logging.on_request(request)
        response = await self.next.send(request)
        self.logging.on_response(request, response)
        return response


class ApimClient:
    """Calls the API under APIM_BASE_URL with the right identity for each method."""

    def __init__(self, settings: Settings, sources: Mapping[str | None, TokenSource],
                 session: aiohttp.ClientSession | None = None, timeouts: Timeouts | None = None) -> None:
        self.settings = settings
        self.timeouts = timeouts or Timeouts()
        self.session = session or new_session()
        self.sources = dict(sources)
        known_secrets.add_key(settings.subscription_key)  # redacted from every answer, whichever call it is to
        # For messages; worked out once, as a bad path needs them on the call's own path.
        self._base_setting, self._proxy_route = settings.name("APIM_BASE_URL"), settings.route("proxy")
        self._pipelines = {client_id: self._pipeline(source) for client_id, source in self.sources.items()}

    def source_for(self, method: str) -> TokenSource:
        """The token source of the identity that makes `method` calls (the settings decide which)."""
        return self.sources[self.settings.client_id_for(method)]

    def _pipeline(self, source: TokenSource) -> AsyncPipeline[HttpRequest, Any]:
        # Both headers are the same on every call: the authorization policy sets them (a UserAgentPolicy
        # would only add a per-call step that re-reads AZURE_HTTP_USER_AGENT from the environment).
        headers = {"User-Agent": USER_AGENT}
        if self.settings.subscription_key:
            headers[SUBSCRIPTION_KEY_HEADER] = self.settings.subscription_key
        # No per-read timeout in the transport: AttemptDeadlinePolicy bounds the whole send, and
        # aiohttp would re-arm a read timer on every chunk received (measured, benchmarks/).
        transport = AioHttpTransport(session=self.session, session_owner=False,
                                     connection_timeout=self.timeouts.connect, read_timeout=None)
        policies: list[Any] = [
            CallDeadlinePolicy(self.timeouts.total, self.timeouts.read),
            WriteSafeRetryPolicy(retry_total=3, retry_backoff_factor=0.5, retry_backoff_max=8,
                                 timeout=self.timeouts.total, max_retry_after=self.timeouts.max_retry_after),
            ApimAuthorizationPolicy(source, self.settings.name("APIM_BASE_URL"), headers),
            AttemptDeadlinePolicy(),
            DebugLoggingPolicy(),
            DependencySpanPolicy(self.settings.apim_base_url, telemetry.tracer),
        ]
        return AsyncPipeline(transport=transport, policies=policies)

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, *, query: str = "", body: bytes | None = None,
                   content_type: str | None = None) -> ApimResponse:
        """Send one call; 401/403/415/429 and 5xx become typed errors with a hint."""
        # Outside the timed part: a bad path or query is the caller's 400, not a failed call to APIM.
        url = build_url(self.settings.apim_base_url, path, query, base_setting=self._base_setting,
                        proxy_route=self._proxy_route)
        started = time.perf_counter()
        status: int | None = None
        try:
            response = await self._send(method, url, body, content_type)
            status = response.status
            self._raise_for_status(method, response, content_type)
        except Exception as exc:
            error = _transport_error(exc, self.settings)
        else:
            telemetry.record_call(method, status, _ms_since(started))
            return response
        # Raised outside the except block: a library exception's text may quote the request
        # or the answer, so it is not even chained to ours (as __context__).
        telemetry.record_call(method, status, _ms_since(started), error)
        raise error

    async def _send(self, method: str, url: str, body: bytes | None, content_type: str | None) -> ApimResponse:
        headers = {"Content-Type": content_type} if content_type and body is not None else {}
        # azure-core's transport-level HttpRequest, not azure.core.rest's: with it the pipeline hands
        # back the transport's own response, where azure.core.rest wraps it in a compatibility layer
        # that costs more per call than the rest of the pipeline together (see `benchmarks/`).
        # Both are supported azure-core API; the policies, retries and timeouts work the same.
        request = HttpRequest(method.upper(), url, headers=headers, data=body)
        client_id = self.settings.client_id_for(method)
        result = await self._pipelines[client_id].run(request)
        http_response = result.http_response
        # The token this answer is to: on the request it answers (a resend after a 401 carries the new one).
        sent = result.http_request.headers.get("Authorization", "").removeprefix("Bearer ")
        # Every key and token the process holds: an answer may echo another call's (an audit endpoint, say).
        held = known_secrets.current()
        secrets = held if sent in held else (sent, *held)
        status = http_response.status_code
        got = http_response.headers
        passed = {name: value for name in PASSED_HEADERS if name in got and (value := _field_value(
            ", ".join(got.getall(name)) if name in _LIST_HEADERS else got[name]))}
        content_type = _field_value(http_response.headers.get("Content-Type"))  # None: the caller's fallback
        return ApimResponse(
            status=status,
            # Whatever the API echoes, the caller never gets our token or key back.
            body=redact_exact(http_response.body(), secrets),
            content_type=redact_exact(content_type, secrets) if content_type is not None else None,
            headers={name: redact_exact(value, secrets) for name, value in passed.items()},
            attempts=1 + len(result.context.get("history", [])),  # azure-core's retry records each retry there
            token_claims=describe_token(sent) if status in (401, 403) else {},
        )

    def _raise_for_status(self, method: str, response: ApimResponse, content_type: str | None) -> None:
        """APIM's refusals (401, 403, 415, 429) and 5xx as typed errors; any other answer is the API's own."""
        status = response.status
        if not 100 <= status <= 599:
            raise UpstreamError(f"APIM answered with {status}, which is not an HTTP status.", status=502)
        if status < 500 and status not in (401, 403, 415, 429):
            return  # the API's own answer (2xx, 3xx, 404, 400, …) goes back as it is
        message = hints.apim_message(response.body, secrets=(self.settings.subscription_key,))
        retried = f" after {response.attempts - 1} retries" if response.attempts > 1 else ""
        said = f"APIM answered {status}{retried}" + (f": {message}" if message else ".")
        retry_after = {"Retry-After": response.headers["Retry-After"]} if "Retry-After" in response.headers else {}
        if status in (401, 403):
            source = self.source_for(method)
            hint = hints.hint_for(status, message, method=method, claims=response.token_claims,
                                  settings=self.settings, renewal=source.renewal,
                                  renew_interval=source.renew_interval)
            raise AccessDenied(said, status=status, hint=hint)
        if status == 415:
            raise UnsupportedMediaType(said, status=status, hint=hints.content_type_hint(content_type))
        if status == 429:
            raise Throttled(said, status=429, headers=retry_after,
                            hint="APIM is rate-limiting this subscription; retry after the Retry-After interval.")
        raise UpstreamError(said, status=status, headers=retry_after)


def _field_value(value: str | None) -> str | None:
    """The upstream's header value if a caller may be given it as it is (RFC 9110 field-value), else None."""
    return value if value is not None and _FIELD_VALUE.fullmatch(value) else None


def _transport_error(exc: BaseException, settings: Settings) -> AppError:
    """A failure of the call as the caller hears it; our words only (library text can quote the request)."""
    if isinstance(exc, AppError):
        return exc
    failure = connection_failure(exc)
    if failure is ConnectionFailure.TIMEOUT:
        return UpstreamTimeout("APIM did not answer in time.")
    if failure is ConnectionFailure.NOT_CONNECTED:
        return UpstreamUnavailable("Could not connect to APIM.",
                                   hint=f"Check {settings.name('APIM_BASE_URL')} and that the gateway is reachable.")
    if failure is ConnectionFailure.BROKEN:
        return UpstreamUnavailable("The connection to APIM failed before a complete answer.")
    if failure is ConnectionFailure.MALFORMED:
        return UpstreamUnavailable("APIM's answer was not valid HTTP (a bad status line, header or chunk).",
                                   hint="The API behind APIM, or a proxy on the way, sent an answer that breaks "
                                        "HTTP/1.1 (a 204 with a body, say): see APIM's trace for the call.")
    return UnexpectedError("Unexpected error while calling the API.", cause=type(exc))


# One header line of an answer: aiohttp's default (8190 bytes) refuses a long Link or Set-Cookie an API may send.
MAX_HEADER_BYTES = 64 * 1024


def new_session() -> aiohttp.ClientSession:
    """The process-wide session (each request sent is traced by DependencySpanPolicy)."""
    connector = aiohttp.TCPConnector(limit=200, ttl_dns_cache=300, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, max_line_size=MAX_HEADER_BYTES,
                                 max_field_size=MAX_HEADER_BYTES)


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000
