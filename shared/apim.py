"""The APIM client: one aiohttp session, azure-core policies, typed errors.

Each identity gets its own azure-core pipeline (its token policy differs); all
pipelines share one aiohttp session, so connections to the gateway are kept
alive and reused across invocations.

    HeadersPolicy        Ocp-Apim-Subscription-Key, and a User-Agent that names the template in APIM's logs
    WriteSafeRetryPolicy azure-core's retry (Retry-After, backoff), minus unsafe write retries
    BearerTokenPolicy    token from TokenSource; one fresh token and one resend after a 401
    HttpLoggingPolicy    azure-core's request logging, which redacts headers and query values; at DEBUG

Every policy runs on every call, so each one earns its place (`benchmarks/` measures
the whole pipeline against a bare aiohttp request).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from azure.core.pipeline import AsyncPipeline, PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy, AsyncRetryPolicy, HeadersPolicy, HttpLoggingPolicy
from azure.core.pipeline.transport import AioHttpTransport, HttpRequest
from opentelemetry.instrumentation.aiohttp_client import create_trace_config

from shared import hints, telemetry
from shared.errors import (
    AccessDenied,
    ConfigurationError,
    Throttled,
    UnsupportedMediaType,
    UpstreamError,
    map_exception,
)
from shared.paths import build_url
from shared.settings import Settings, is_loopback
from shared.tokens import TokenSource, describe_token

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
# Response headers worth passing back to the caller.
PASSED_HEADERS = ("Location", "ETag", "Retry-After", "Cache-Control")


@dataclass(frozen=True)
class Timeouts:
    connect: float = 5.0
    read: float = 30.0
    total: float = 60.0  # across retries; Functions' HTTP limit is 230 s
    max_retry_after: float = 10.0  # longer waits are the caller's to decide


@dataclass
class ApimResponse:
    status: int
    body: bytes
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)
    attempts: int = 1  # sends by the retry policy (a resend after a 401 is part of one attempt)


class WriteSafeRetryPolicy(AsyncRetryPolicy):
    """azure-core's retry, except where a write could run twice.

    azure-core retries POST/PATCH on 500/503/504; those may have reached the
    backend, so we don't. A 429 is retried for any method: the gateway refused
    it before forwarding. Other 4xx are not retried, Retry-After or not, and
    Retry-After waits longer than `max_retry_after` are not slept through.
    """

    def __init__(self, *, max_retry_after: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_retry_after = max_retry_after

    def is_retry(self, settings: dict[str, Any], response: PipelineResponse) -> bool:
        status = response.http_response.status_code
        if status < 400:
            return False  # as azure-core decides too; the common case skips reading Retry-After headers
        if status < 500 and status not in RETRYABLE_CLIENT_ERRORS:
            # azure-core retries any response that has a Retry-After; on a 4xx it only sets a wait
            # (APIM's quota policy answers 403 with one until the quota period renews).
            return False
        retry_after = self.get_retry_after(response)
        if retry_after is not None and retry_after > self.max_retry_after:
            return False
        if response.http_request.method.upper() in ("POST", "PATCH"):
            return bool(settings["total"]) and status == 429
        return super().is_retry(settings, response)


class BearerTokenPolicy(AsyncHTTPPolicy):
    """Adds the identity's token; after a 401, gets one fresh token and sends once more.

    Not azure-core's AsyncBearerTokenCredentialPolicy: it resends after a 401 only for a
    claims challenge (CAE), which APIM's 401 never is, and TokenSource adds the single
    fetch in flight, with its failure shared, that a burst of invocations needs.
    """

    def __init__(self, source: TokenSource) -> None:
        super().__init__()
        self.source = source

    async def send(self, request: PipelineRequest) -> PipelineResponse:
        url = request.http_request.url
        if not url.lower().startswith("https://") and not is_loopback(url):
            # Settings validation stops this first; should it ever get here, it is configuration, not input.
            raise ConfigurationError(["Refusing to send a bearer token over plain HTTP: APIM_BASE_URL must use https."])
        token = await self.source.get()
        self._authorize(request, token.token)
        response = await self.next.send(request)
        if response.http_response.status_code == 401:
            fresh = await self.source.renew(token.token)
            if fresh.token != token.token:
                self._authorize(request, fresh.token)
                token = fresh
                response = await self.next.send(request)
        response.context["token_claims"] = describe_token(token.token) if response.http_response.status_code in (
            401, 403) else {}
        return response

    @staticmethod
    def _authorize(request: PipelineRequest, token: str) -> None:
        request.http_request.headers["Authorization"] = f"Bearer {token}"


class ApimClient:
    """Calls the API under APIM_BASE_URL with the right identity for each method."""

    def __init__(self, settings: Settings, sources: dict[str | None, TokenSource],
                 session: aiohttp.ClientSession | None = None, timeouts: Timeouts | None = None) -> None:
        self.settings = settings
        self.timeouts = timeouts or Timeouts()
        self.session = session or new_session()
        self._pipelines = {client_id: self._pipeline(source) for client_id, source in sources.items()}

    def _pipeline(self, source: TokenSource) -> AsyncPipeline:
        # Both headers are the same on every call: one HeadersPolicy sets them (a UserAgentPolicy
        # would only add a per-call step that re-reads AZURE_HTTP_USER_AGENT from the environment).
        headers = {"User-Agent": USER_AGENT}
        if self.settings.subscription_key:
            headers[SUBSCRIPTION_KEY_HEADER] = self.settings.subscription_key
        transport = AioHttpTransport(session=self.session, session_owner=False,
                                     connection_timeout=self.timeouts.connect, read_timeout=self.timeouts.read)
        policies = [
            HeadersPolicy(base_headers=headers),
            WriteSafeRetryPolicy(retry_total=3, retry_backoff_factor=0.5, retry_backoff_max=8,
                                 timeout=self.timeouts.total, max_retry_after=self.timeouts.max_retry_after),
            BearerTokenPolicy(source),
            HttpLoggingPolicy(http_logging_level=HTTP_LOGGING_LEVEL),
        ]
        return AsyncPipeline(transport=transport, policies=policies)  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.session.close()

    async def call(self, method: str, path: str, *, query: str = "", body: bytes | None = None,
                   content_type: str | None = None) -> ApimResponse:
        """Send one call; 401/403/415/429 and 5xx become typed errors with a hint."""
        # Outside the timed part: a bad path or query is the caller's 400, not a failed call to APIM.
        url = build_url(self.settings.apim_base_url, path, query)
        started = time.perf_counter()
        status: int | None = None
        try:
            response, claims = await self._send(method, url, body, content_type)
            status = response.status
            self._raise_for_status(method, response, claims, content_type)
        except Exception as exc:
            error = map_exception(exc)
        else:
            telemetry.record_call(method, status, _ms_since(started))
            return response
        # Raised outside the except block: a library exception's text may quote the request
        # or the answer, so it is not even chained to ours (as __context__).
        telemetry.record_call(method, status, _ms_since(started), error)
        raise error

    async def _send(self, method: str, url: str, body: bytes | None,
                    content_type: str | None) -> tuple[ApimResponse, dict[str, Any]]:
        headers = {"Content-Type": content_type} if content_type and body is not None else {}
        # azure-core's transport-level HttpRequest, not azure.core.rest's: with it the pipeline hands
        # back the transport's own response, where azure.core.rest wraps it in a compatibility layer
        # that costs more per call than the rest of the pipeline together (see `benchmarks/`).
        # Both are supported azure-core API; the policies, retries and timeouts work the same.
        request = HttpRequest(method.upper(), url, headers=headers, data=body)
        pipeline = self._pipelines[self.settings.client_id_for(method)]
        result = await pipeline.run(request)  # not streamed: the body is read before run() returns
        http_response = result.http_response
        response = ApimResponse(
            status=http_response.status_code,
            body=http_response.body(),
            content_type=http_response.headers.get("Content-Type"),
            headers={name: http_response.headers[name] for name in PASSED_HEADERS if name in http_response.headers},
            attempts=1 + len(result.context.get("history", [])),  # azure-core's retry records each retry there
        )
        return response, result.context.get("token_claims", {})

    def _raise_for_status(self, method: str, response: ApimResponse, claims: dict[str, Any],
                          content_type: str | None) -> None:
        """APIM's refusals (401, 403, 415, 429) and 5xx as typed errors; any other answer is the API's own."""
        status = response.status
        if status < 500 and status not in (401, 403, 415, 429):
            return  # the API's own answer (2xx, 3xx, 404, 400, …) goes back as it is
        message = hints.apim_message(response.body, secrets=(self.settings.subscription_key,))
        retried = f" after {response.attempts - 1} retries" if response.attempts > 1 else ""
        said = f"APIM answered {status}{retried}" + (f": {message}" if message else ".")
        retry_after = {"Retry-After": response.headers["Retry-After"]} if "Retry-After" in response.headers else {}
        if status in (401, 403):
            hint = hints.hint_for(status, message, method=method, claims=claims, settings=self.settings)
            raise AccessDenied(said, status=status, hint=hint)
        if status == 415:
            raise UnsupportedMediaType(said, status=status, hint=hints.content_type_hint(content_type))
        if status == 429:
            raise Throttled(said, status=429, headers=retry_after,
                            hint="APIM is rate-limiting this subscription; retry after the Retry-After interval.")
        raise UpstreamError(said, status=status, headers=retry_after)


def new_session() -> aiohttp.ClientSession:
    """The process-wide session, traced by OpenTelemetry's aiohttp instrumentation."""
    connector = aiohttp.TCPConnector(limit=200, ttl_dns_cache=300, keepalive_timeout=60)
    return aiohttp.ClientSession(connector=connector, trace_configs=[create_trace_config()])


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


__all__ = ["ApimClient", "ApimResponse", "BearerTokenPolicy", "Timeouts", "WriteSafeRetryPolicy"]
