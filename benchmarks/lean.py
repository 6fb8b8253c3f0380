"""A reference, not a recommendation: the app's happy path written by hand.

It does what the template's telemetry promises for every call and nothing else: the token from the
app's own `TokenSource` (with its cache-hit span and counter), one request over
one aiohttp session, one dependency span by hand (trace context propagated to
APIM) and the app's call metric. There is no azure-core pipeline (retries,
timeouts, redacted logging, 401 renewal) and no OpenTelemetry aiohttp
instrumentation, so its distance from the app is what those libraries cost
per call, and its distance from the floor is what the required telemetry and
the Functions types cost. Issue 5 uses it to show which targets any
implementation could meet on this stand-in.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import azure.functions as func
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, StatusCode
from yarl import URL

from shared import telemetry
from shared.runtime import get_runtime


class LeanFunction:
    """`GET {APIM_BASE_URL}/{path}` with the app's token source and telemetry, no libraries in between."""

    def __init__(self) -> None:
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=60))

    async def __call__(self, req: func.HttpRequest, context: Any) -> func.HttpResponse:
        with telemetry.invocation(context):
            runtime = get_runtime()
            token = await runtime.token_source("GET").get()
            url = URL(f"{runtime.settings.apim_base_url}/{req.route_params['path']}")
            headers = {"Authorization": f"Bearer {token.token}"}
            if runtime.settings.subscription_key:
                headers["Ocp-Apim-Subscription-Key"] = runtime.settings.subscription_key
            started = time.perf_counter()
            span = telemetry.tracer.start_span("GET", kind=SpanKind.CLIENT, attributes={
                "http.request.method": "GET", "url.full": str(url), "server.address": url.host or "",
                "server.port": url.port or 443})
            propagate.inject(headers, context=trace.set_span_in_context(span))
            async with self.session.get(url, headers=headers) as response:
                body = await response.read()
            span.set_attribute("http.response.status_code", response.status)
            if response.status >= 400:
                span.set_status(StatusCode.ERROR)
            span.end()
            telemetry.record_call("GET", response.status, (time.perf_counter() - started) * 1000)
            return func.HttpResponse(body=body, status_code=response.status,
                                     mimetype=response.content_type or "application/octet-stream")

    async def close(self) -> None:
        await self.session.close()
