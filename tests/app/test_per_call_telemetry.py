"""Per-call telemetry: the HTTP dependency span of each request to APIM (shared/tracing.py), on a pipeline with
a fake transport, and token acquisitions counted in process (shared/telemetry.py)."""

from __future__ import annotations

from typing import Any

import pytest
from azure.core.pipeline import AsyncPipeline
from azure.core.pipeline.transport import AsyncHttpTransport, HttpRequest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from shared.tracing import DependencySpanPolicy, redact_query


class Answer:
    def __init__(self, request: HttpRequest, status: int) -> None:
        self.request, self.status_code, self.headers = request, status, {}


class FakeTransport(AsyncHttpTransport):
    """Answers `status`, or raises `error`; keeps the requests it was given."""

    def __init__(self, status: int = 200, error: BaseException | None = None) -> None:
        self.status, self.error, self.sent = status, error, []

    async def send(self, request: HttpRequest, **kwargs: Any) -> Any:
        self.sent.append(request)
        if self.error:
            raise self.error
        return Answer(request, self.status)

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def __aexit__(self, *args: Any) -> None: ...


def traced(transport: FakeTransport, base_url: str = "https://contoso.azure-api.net/orders", *,
           sampled: bool = True) -> tuple[AsyncPipeline, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider() if sampled else TracerProvider(sampler=ALWAYS_OFF)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    policy = DependencySpanPolicy(base_url, provider.get_tracer("test"))
    return AsyncPipeline(transport=transport, policies=[policy]), exporter


async def test_each_request_is_a_client_span_app_insights_shows_as_an_http_dependency():
    transport = FakeTransport(status=201)
    pipeline, exporter = traced(transport)

    await pipeline.run(HttpRequest("POST", "https://contoso.azure-api.net/orders/orders?api-version=1&flag"))

    [span] = exporter.get_finished_spans()
    assert (span.name, span.kind, span.status.status_code) == ("POST", SpanKind.CLIENT, StatusCode.UNSET)
    assert dict(span.attributes) == {
        "http.request.method": "POST", "url.full": "https://contoso.azure-api.net/orders/orders?api-version=REDACTED&flag",
        "url.scheme": "https", "server.address": "contoso.azure-api.net", "server.port": 443,
        "http.response.status_code": 201}
    version, trace_id, span_id, flags = transport.sent[0].headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == ("00", f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}")
    assert int(flags, 16) & 1  # sampled


@pytest.mark.parametrize(("base_url", "target"), [("https://contoso.azure-api.net/orders", "contoso.azure-api.net"),
                                                    ("https://contoso.azure-api.net:8443/orders",
                                                     "contoso.azure-api.net:8443")])
async def test_app_insights_shows_the_target_without_a_default_port_and_why_a_send_failed(base_url, target):
    # What the Azure Monitor exporter makes of the span: its own conversion, as it runs when it exports.
    from azure.monitor.opentelemetry.exporter.export.trace._exporter import _convert_span_to_envelope

    pipeline, exporter = traced(FakeTransport(error=ConnectionResetError("reset by peer")), base_url)
    with pytest.raises(ConnectionResetError):
        await pipeline.run(HttpRequest("GET", base_url + "/status"))

    [span] = exporter.get_finished_spans()
    dependency = _convert_span_to_envelope(span).data.base_data
    assert (dependency.target, dependency.type, dependency.success) == (target, "HTTP", False)
    assert dependency.properties == {"apim.error_type": "ConnectionResetError"}


async def test_a_refused_call_is_a_failed_dependency_with_its_status():
    pipeline, exporter = traced(FakeTransport(status=403), "http://127.0.0.1:8123/orders")

    await pipeline.run(HttpRequest("GET", "http://127.0.0.1:8123/orders/orders/1"))

    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes["server.address"], span.attributes["server.port"]) == ("127.0.0.1", 8123)
    assert span.attributes["http.response.status_code"] == 403


async def test_a_request_that_never_got_an_answer_ends_its_span_failed_with_the_error_type():
    pipeline, exporter = traced(FakeTransport(error=ConnectionResetError("reset by peer")))

    with pytest.raises(ConnectionResetError):
        await pipeline.run(HttpRequest("GET", "https://contoso.azure-api.net/orders/status"))

    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["apim.error_type"] == "ConnectionResetError"
    assert "http.response.status_code" not in span.attributes


async def test_a_dropped_trace_still_reaches_apim_with_the_invocations_trace_unsampled():
    transport = FakeTransport()
    pipeline, exporter = traced(transport, sampled=False)

    await pipeline.run(HttpRequest("GET", "https://contoso.azure-api.net/orders/status"))

    assert exporter.get_finished_spans() == ()
    assert not int(transport.sent[0].headers["traceparent"].rsplit("-", 1)[1], 16) & 1  # not sampled


async def test_the_invocations_trace_state_travels_with_it():
    from opentelemetry import context, trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    transport = FakeTransport()
    pipeline, exporter = traced(transport)
    parent = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("congo", "t61rcWkgMzE")]))
    token = context.attach(trace.set_span_in_context(NonRecordingSpan(parent)))
    try:
        await pipeline.run(HttpRequest("GET", "https://contoso.azure-api.net/orders/status"))
    finally:
        context.detach(token)

    [span] = exporter.get_finished_spans()
    assert span.parent.span_id == parent.span_id and span.context.trace_id == parent.trace_id
    assert transport.sent[0].headers["tracestate"] == "congo=t61rcWkgMzE"
    assert transport.sent[0].headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c-")


@pytest.mark.parametrize("parent", [None, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"])
async def test_without_an_sdk_the_request_carries_what_the_w3c_propagator_would_write(parent):
    # Telemetry off: the API's no-op tracer hands back the current span, or an invalid one when there is
    # none, and the propagator writes nothing for an invalid span (an all-zero traceparent is not W3C).
    from opentelemetry import context, trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from shared.tracing import remote_parent

    transport = FakeTransport()
    pipeline = AsyncPipeline(transport=transport, policies=[
        DependencySpanPolicy("https://contoso.azure-api.net/orders", trace.NoOpTracer())])
    current = remote_parent(parent) if parent else context.get_current()
    expected: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(expected, current)
    token = context.attach(current)
    try:
        await pipeline.run(HttpRequest("GET", "https://contoso.azure-api.net/orders/status"))
    finally:
        context.detach(token)

    sent = transport.sent[0].headers
    assert {name: sent[name] for name in ("traceparent", "tracestate") if name in sent} == expected
    assert bool(expected) == bool(parent)


@pytest.mark.parametrize(("url", "shown"), [
    ("https://h/p", "https://h/p"),
    ("https://h/p?", "https://h/p?"),
    ("https://h/p?subscription-key=secret&a=1", "https://h/p?subscription-key=REDACTED&a=REDACTED"),
    ("https://h/p?a=b=c&&flag", "https://h/p?a=REDACTED&flag"),
])
def test_query_values_never_reach_the_span(url, shown):
    assert redact_query(url) == shown


def test_token_acquisitions_are_counted_in_process_and_read_as_a_counter_would_be():
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from shared.telemetry import _AcquisitionCounts

    counts, reader = _AcquisitionCounts(), InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader]).get_meter("test")
    meter.create_observable_counter("apim.token.acquisitions", callbacks=[counts.observe])
    for _ in range(3):
        counts.add("reader-id", "api://orders/.default", "cache", "success")
    counts.add("reader-id", "api://orders/.default", "endpoint", "failure")

    [metric] = reader.get_metrics_data().resource_metrics[0].scope_metrics[0].metrics
    found = {(p.attributes["token.source"], p.attributes["token.outcome"]): p.value for p in metric.data.data_points}
    assert found == {("cache", "success"): 3, ("endpoint", "failure"): 1}
    assert metric.data.is_monotonic
    [point] = [p for p in metric.data.data_points if p.attributes["token.source"] == "cache"]
    assert dict(point.attributes) == {"token.client_id": "reader-id", "token.audience": "api://orders",
                                      "token.source": "cache", "token.outcome": "success"}


_TRACE, _SPAN = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"


@pytest.mark.parametrize("trace_parent", [
    f"00-{_TRACE}-{_SPAN}-01", f"00-{_TRACE}-{_SPAN}-00", f" \t00-{_TRACE}-{_SPAN}-01\t ", f"00-{_TRACE}-{_SPAN}-ff",
    f"01-{_TRACE}-{_SPAN}-01-future", f"00-{_TRACE}-{_SPAN}-01-extra", f"ff-{_TRACE}-{_SPAN}-01",
    f"00-{'0' * 32}-{_SPAN}-01", f"00-{_TRACE}-{'0' * 16}-01", f"00-{_TRACE.upper()}-{_SPAN}-01",
    f"00-{_TRACE}-{_SPAN}-1", f"00-{_TRACE}-{_SPAN}", f"00-{_TRACE}-{_SPAN}-01\n", "", "garbage",
])
@pytest.mark.parametrize("trace_state", [
    None, "congo=t61rcWkgMzE", "congo=t61rcWkgMzE, rojo=00f067aa0ba902b7", "not a member", "a=" + "x" * 600,
])
def test_the_invocations_trace_context_is_read_as_the_w3c_propagator_reads_it(trace_parent, trace_state):
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    from shared.tracing import remote_parent

    carrier = {"traceparent": trace_parent, **({"tracestate": trace_state} if trace_state is not None else {})}
    expected = TraceContextTextMapPropagator().extract(carrier)
    got = remote_parent(trace_parent, trace_state)

    assert dict(got).keys() == dict(expected).keys()
    parent, wanted = trace.get_current_span(got).get_span_context(), trace.get_current_span(expected).get_span_context()
    assert (parent.trace_id, parent.span_id, parent.is_remote, parent.trace_flags, parent.is_valid) == (
        wanted.trace_id, wanted.span_id, wanted.is_remote, wanted.trace_flags, wanted.is_valid)
    assert parent.trace_state.to_header() == wanted.trace_state.to_header()
