"""The HTTP dependency span of each request to APIM, made by a policy in the azure-core pipeline.

One span per request sent (a retry, or the resend after a 401, is a request of its
own), of kind CLIENT, with the attributes the Azure Monitor exporter turns into an
HTTP dependency: `http.request.method`, `url.full` (query values redacted: a query
may carry a key), `url.scheme`, `server.address` and `server.port` (the dependency's
target: the exporter leaves out a port that is the scheme's default only when it knows
the scheme), `http.response.status_code` (its result code), and the span's own duration.
A send that got no answer carries `apim.error_type`, the only attribute that shows in
the item's customDimensions: the exporter drops every `http.*` one from them. The
request carries the span's W3C `traceparent`, so APIM's own telemetry joins the
invocation's trace, sampled or not.

`remote_parent` reads the invocation's own trace context (the host's `traceparent`
and `tracestate`) into the Context that OpenTelemetry's W3C propagator would make of it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import MutableMapping
from typing import Any
from urllib.parse import urlsplit

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy
from opentelemetry.context import Context
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    StatusCode,
    TraceFlags,
    Tracer,
    TraceState,
    set_span_in_context,
)

from .deadline import CONTEXT_KEY as DEADLINE_KEY
from .redaction import redact_query

logger = logging.getLogger(__name__)

DEFAULT_PORTS = {"https": 443, "http": 80}
ERROR_TYPE = "apim.error_type"
# A W3C traceparent as OpenTelemetry's TraceContextTextMapPropagator matches it, and its tracestate limit.
_TRACEPARENT = re.compile(r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?[ \t]*$")
_MAX_TRACESTATE_LENGTH = 512


# Not OpenTelemetry's aiohttp instrumentation: measured (benchmarks/), it cost half the app's overhead per call.
class DependencySpanPolicy(AsyncHTTPPolicy[Any, Any]):
    """A CLIENT span around each request to the gateway at `base_url` (its host and port are read once)."""

    def __init__(self, base_url: str, tracer: Tracer) -> None:
        super().__init__()
        parts = urlsplit(base_url)
        self.tracer = tracer
        self.server: dict[str, str | int] = {
            "url.scheme": parts.scheme, "server.address": parts.hostname or "",
            "server.port": parts.port or DEFAULT_PORTS.get(parts.scheme, 443)}

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        http_request = request.http_request
        method = http_request.method
        span = self.tracer.start_span(method, kind=SpanKind.CLIENT, attributes={
            "http.request.method": method, "url.full": redact_query(http_request.url), **self.server})
        _propagate(span, http_request.headers)
        try:
            response = await self.next.send(request)
        except BaseException as exc:
            # Not "error.type" or "http.…": the Azure Monitor exporter drops those from a span's properties.
            span.set_attribute(ERROR_TYPE, _error_type(exc, request))
            span.set_status(StatusCode.ERROR)
            span.end()
            raise
        status = response.http_response.status_code
        span.set_attribute("http.response.status_code", status)
        if status >= 400:
            span.set_status(StatusCode.ERROR)
        span.end()
        return response


def _error_type(exc: BaseException, request: PipelineRequest[Any]) -> str:
    """What ended a send: a time limit cancels it (shared.deadline), which the caller hears as a timeout."""
    deadline = request.context.get(DEADLINE_KEY)
    if isinstance(exc, asyncio.CancelledError) and deadline is not None and deadline.expired:
        return "TimeoutError"
    return type(exc).__name__


def _propagate(span: Span, headers: MutableMapping[str, str]) -> None:
    """W3C trace context headers for `span`, as TraceContextTextMapPropagator writes them: none for an
    invalid span (what the API's no-op tracer hands back when telemetry is off and no trace is current).

    Written out: the propagator first wraps the span in a new Context and looks it up
    again, which costs twice what formatting the header does, on every request.
    """
    context = span.get_span_context()
    if not context.is_valid:
        return
    headers["traceparent"] = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    if context.trace_state:
        headers["tracestate"] = context.trace_state.to_header()


# Not TraceContextTextMapPropagator.extract(): its carrier getter, lists and regex look-up cost twice this per
# invocation (measured, benchmarks/). The rules are the propagator's, and tests hold the two to the same answers.
def remote_parent(trace_parent: str, trace_state: str | None = None) -> Context:
    """The Context the W3C propagator extracts from these headers: the remote parent span, or none if invalid."""
    match = _TRACEPARENT.match(trace_parent)
    if match is None:
        return Context()
    version, trace_id, span_id, flags, extra = match.groups()
    if trace_id == "0" * 32 or span_id == "0" * 16 or version == "ff" or (version == "00" and extra):
        return Context()
    state = None
    if trace_state is not None:
        if len(trace_state) > _MAX_TRACESTATE_LENGTH:
            logger.warning("tracestate header exceeded the maximum length of %d characters", _MAX_TRACESTATE_LENGTH)
        else:
            state = TraceState.from_header([trace_state])
    parent = SpanContext(int(trace_id, 16), int(span_id, 16), is_remote=True, trace_flags=TraceFlags(int(flags, 16)),
                         trace_state=state)
    return set_span_in_context(NonRecordingSpan(parent), Context())
