"""Application Insights ingestion, fed by the real azure-monitor-opentelemetry exporter.

Providers here are local (never `configure_azure_monitor`, which sets global
ones that other tests rely on), and offline storage is off so nothing is
written to disk or retried later behind the test's back.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from azure.monitor.opentelemetry.exporter import (
    AzureMonitorLogExporter,
    AzureMonitorMetricExporter,
    AzureMonitorTraceExporter,
)
from opentelemetry.instrumentation.logging.handler import LoggingHandler  # the one the distro uses
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind

from tests.devstack.conftest import ingestion_session

RESOURCE = Resource.create({"service.name": "devstack-tests"})


def instrumentation_key(endpoints: dict[str, Any]) -> str:
    parts = dict(part.split("=", 1) for part in endpoints["connection_string"].split(";") if part)
    return parts["InstrumentationKey"]


def by_base_type(envelopes: list[dict[str, Any]], base_type: str) -> list[dict[str, Any]]:
    return [e for e in envelopes if e["data"]["baseType"] == base_type]


@pytest.fixture
def tracing(endpoints, control, exporter_auth) -> Iterator[tuple[TracerProvider, AzureMonitorTraceExporter]]:
    """A local tracer provider exporting synchronously to the stand-in."""
    provider = TracerProvider(resource=RESOURCE)
    # tracer_provider: the exporter reads the resource from it, not from the global provider.
    exporter = AzureMonitorTraceExporter(connection_string=endpoints["connection_string"],
                                         disable_offline_storage=True, tracer_provider=provider, **exporter_auth)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


# ---------------------------------------------------------------- the real exporter


def test_spans_arrive_as_request_and_dependency_envelopes(tracing, endpoints, control):
    provider, _ = tracing
    tracer = provider.get_tracer(__name__)
    with tracer.start_as_current_span("GET /api/apim/orders", kind=SpanKind.SERVER), \
            tracer.start_as_current_span("GET /orders", kind=SpanKind.CLIENT, attributes={
                "http.request.method": "GET", "url.full": "http://127.0.0.1/orders/orders",
                "server.address": "127.0.0.1", "http.response.status_code": 200}):
        pass
    assert provider.force_flush()

    envelopes = control.telemetry()
    assert {e["iKey"] for e in envelopes} == {instrumentation_key(endpoints)}
    [request] = by_base_type(envelopes, "RequestData")
    [dependency] = by_base_type(envelopes, "RemoteDependencyData")
    assert request["name"] == "Microsoft.ApplicationInsights.Request"
    assert dependency["name"] == "Microsoft.ApplicationInsights.RemoteDependency"
    assert dependency["data"]["baseData"]["resultCode"] == "200"
    # Correlated: the dependency's parent is the request, in the same operation.
    assert dependency["tags"]["ai.operation.id"] == request["tags"]["ai.operation.id"]
    assert dependency["tags"]["ai.operation.parentId"] == request["data"]["baseData"]["id"]
    stats = control.stats()["ingestion"]
    assert stats["items"] == len(envelopes)
    assert stats["by_type"]["RequestData"] == 1


def test_logs_arrive_as_message_envelopes(endpoints, control, exporter_auth):
    provider = LoggerProvider(resource=RESOURCE)
    exporter = AzureMonitorLogExporter(connection_string=endpoints["connection_string"], disable_offline_storage=True,
                                       **exporter_auth)
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    logger = logging.getLogger("devstack.tests.ingestion")
    handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger.addHandler(handler)
    try:
        logger.warning("order %s shipped", "1001")
    finally:
        logger.removeHandler(handler)
        provider.shutdown()

    [message] = by_base_type(control.telemetry(), "MessageData")
    assert message["name"] == "Microsoft.ApplicationInsights.Message"
    assert message["data"]["baseData"]["message"] == "order 1001 shipped"
    assert message["data"]["baseData"]["severityLevel"] in ("Warning", 2)  # the exporter sends the number


def test_metrics_arrive_as_metric_envelopes(endpoints, control, exporter_auth):
    exporter = AzureMonitorMetricExporter(connection_string=endpoints["connection_string"],
                                          disable_offline_storage=True, **exporter_auth)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=RESOURCE, metric_readers=[reader])
    provider.get_meter(__name__).create_counter("token.acquisitions").add(2, {"outcome": "success"})
    try:
        assert provider.force_flush()
    finally:
        provider.shutdown()

    metrics = by_base_type(control.telemetry(), "MetricData")
    [point] = [m["data"]["baseData"]["metrics"][0] for m in metrics
               if m["data"]["baseData"]["metrics"][0]["name"] == "token.acquisitions"]
    assert point["value"] == 2


def test_the_exporter_retries_a_transient_503(tracing, control):
    provider, _ = tracing
    control.fault("ingestion", status=503, times=1)
    with provider.get_tracer(__name__).start_as_current_span("after a 503", kind=SpanKind.SERVER):
        pass

    assert [e["data"]["baseData"]["name"] for e in by_base_type(control.telemetry(), "RequestData")] == ["after a 503"]
    assert control.stats()["ingestion"]["requests"] == 2  # azure-core's retry policy sent it again


@pytest.mark.parametrize("fault", [
    {"status": 500, "times": 5},
    {"status": 429, "retry_after": 0, "times": 5},
    {"status": 400, "times": 1},
    {"drop_connection": True, "times": 1},
    {"malformed_body": True, "times": 1},
], ids=["500", "429", "400", "dropped", "malformed"])
def test_the_exporter_drops_what_it_cannot_send_without_crashing(endpoints, control, fault, exporter_auth):
    # No pipeline retries and no disk storage: one attempt, then a FAILURE result.
    provider = TracerProvider(resource=RESOURCE)
    exporter = AzureMonitorTraceExporter(connection_string=endpoints["connection_string"],
                                         disable_offline_storage=True, retry_total=0, tracer_provider=provider,
                                         **exporter_auth)
    span = provider.get_tracer(__name__).start_span("doomed")
    span.end()
    control.fault("ingestion", **fault)

    assert exporter.export([span]) == SpanExportResult.FAILURE
    assert control.telemetry() == []
    assert control.stats()["ingestion"]["requests"] == 1


def test_exporter_background_reporting_is_off_in_tests():
    # Statsbeat would post to a fixed Azure host and OneSettings polls
    # settings.sdk.monitor.azure.com; conftest turns both off for every test.
    from azure.monitor.opentelemetry.exporter._configuration._state import get_configuration_manager
    from azure.monitor.opentelemetry.exporter.statsbeat._state import is_statsbeat_enabled
    from azure.monitor.opentelemetry.exporter.statsbeat.customer._utils import is_customer_sdkstats_enabled

    assert not is_statsbeat_enabled()
    assert get_configuration_manager() is None
    assert not is_customer_sdkstats_enabled()


# ---------------------------------------------------------------- the protocol, by hand


def envelope(endpoints: dict[str, Any], message: str = "hello", **overrides: Any) -> dict[str, Any]:
    item = {
        "name": "Microsoft.ApplicationInsights.Message",
        "time": datetime.now(UTC).isoformat(),
        "iKey": instrumentation_key(endpoints),
        "tags": {"ai.cloud.role": "devstack-tests"},
        "data": {"baseType": "MessageData", "baseData": {"ver": 2, "message": message}},
    }
    item.update(overrides)
    return item


@pytest.fixture
async def track(devstack, endpoints, control) -> AsyncIterator[Any]:
    """POST raw bytes to /v2.1/track as the host identity; returns (status, TrackResponse body)."""
    async with ingestion_session(devstack) as session:
        async def post(body: bytes, headers: dict[str, str] | None = None,
                       path: str = "/v2.1/track") -> tuple[int, dict[str, Any]]:
            headers = {"Content-Type": "application/json", **(headers or {})}
            async with session.post(endpoints["ingestion_endpoint"] + path, data=body, headers=headers) as response:
                return response.status, await response.json()
        yield post


async def test_gzip_bodies_are_accepted(track, endpoints, control):
    body = gzip.compress(json.dumps([envelope(endpoints, "zipped")]).encode())
    status, result = await track(body, {"Content-Encoding": "gzip"})
    assert (status, result) == (200, {"itemsReceived": 1, "itemsAccepted": 1, "errors": []})
    assert control.telemetry()[0]["data"]["baseData"]["message"] == "zipped"


async def test_newline_delimited_json_is_accepted(track, endpoints, control):
    lines = "\n".join(json.dumps(envelope(endpoints, m)) for m in ("one", "two")) + "\n"
    status, result = await track(lines.encode(), {"Content-Type": "application/x-json-stream"})
    assert (status, result["itemsAccepted"]) == (200, 2)
    assert [e["data"]["baseData"]["message"] for e in control.telemetry()] == ["one", "two"]


async def test_the_double_slash_path_azure_connection_strings_produce_is_accepted(track, endpoints):
    status, _ = await track(json.dumps([envelope(endpoints)]).encode(), path="//v2.1/track")
    assert status == 200


async def test_invalid_items_get_a_206_with_an_error_each(track, endpoints, control):
    items = [envelope(endpoints, "good"), envelope(endpoints, name=""), envelope(endpoints, iKey="not-a-key")]
    status, result = await track(json.dumps(items).encode())
    assert status == 206
    assert (result["itemsReceived"], result["itemsAccepted"]) == (3, 1)
    assert [(e["index"], e["statusCode"]) for e in result["errors"]] == [(1, 400), (2, 400)]
    assert "Field 'name' on type 'Envelope' is required" in result["errors"][0]["message"]
    assert [e["data"]["baseData"]["message"] for e in control.telemetry()] == ["good"]
    assert control.stats()["ingestion"]["rejected"] == 2


async def test_a_batch_with_nothing_acceptable_is_a_400(track, endpoints, control):
    too_old = (datetime.now(UTC) - timedelta(days=3)).isoformat()
    status, result = await track(json.dumps([envelope(endpoints, time=too_old)]).encode())
    assert status == 400
    assert result["itemsAccepted"] == 0
    assert "older than the allowed min date" in result["errors"][0]["message"]
    assert control.telemetry() == []


async def test_an_unparseable_body_is_a_400(track, control):
    status, result = await track(b'[{"name": ')
    assert status == 400
    assert (result["itemsReceived"], result["itemsAccepted"]) == (0, 0)
    assert result["errors"][0]["statusCode"] == 400


async def test_live_metrics_pings_are_answered_and_do_not_eat_faults(devstack, endpoints, control):
    control.fault("ingestion", status=503)
    url = endpoints["ingestion_endpoint"] + "/QuickPulseService.svc/ping?ikey=x&api-version=2024-04-01-preview"
    async with ingestion_session(devstack, None) as session, session.post(url, json={}) as response:
        assert response.status == 200
        assert response.headers["x-ms-qps-subscribed"] == "false"
        assert (await response.json())["Metrics"] == []
    assert len(control.faults()) == 1  # still waiting for a telemetry upload
    assert control.stats()["ingestion"] == {"live_metrics_requests": 1}


# ---------------------------------------------------------------- Entra authentication

async def _post_as(stack, identity: str | None, token: str | None = None) -> tuple[int, dict[str, Any]]:
    body = json.dumps([envelope(stack.endpoints, "who sent this"), envelope(stack.endpoints, "and this")])
    async with ingestion_session(stack, identity) as session:
        headers = {"Content-Type": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        async with session.post(stack.endpoints["ingestion_endpoint"] + "/v2.1/track", data=body,
                                headers=headers) as response:
            return response.status, await response.json()


async def test_without_a_token_telemetry_is_refused_with_401(devstack, control):
    status, result = await _post_as(devstack, None)
    assert status == 401
    assert (result["itemsReceived"], result["itemsAccepted"]) == (2, 0)
    assert [e["statusCode"] for e in result["errors"]] == [401, 401]
    assert control.telemetry() == []
    stats = control.stats()["ingestion"]
    assert (stats["refused_items"], stats["refused_by_reason"]) == (2, {"unauthenticated": 2})


async def test_an_identity_without_monitoring_metrics_publisher_is_refused_with_403(devstack, control):
    status, result = await _post_as(devstack, "reader")
    assert status == 403
    assert "Monitoring Metrics Publisher" in result["errors"][0]["message"]
    assert control.stats()["ingestion"]["refused_by_reason"] == {"forbidden": 2}
    assert control.telemetry() == []


@pytest.mark.parametrize("case", ["another audience", "another signer", "expired"])
async def test_a_token_not_for_ingestion_is_refused_with_401(devstack, control, case):
    state = devstack.state
    host = state.config.identities["host"]
    if case == "another audience":
        token, _ = state.issuer.issue(host, state.config.api.app_id_uri)
    else:
        claims = state.issuer.claims_for(host, "https://monitor.azure.com/")
        if case == "expired":
            claims["exp"] = claims["iat"] + 1
            token = state.issuer.sign(claims)
        else:
            from devstack.entra import EntraSigningKey

            token = state.issuer.sign(claims, key=EntraSigningKey.generate())
    status, _ = await _post_as(devstack, None, token)
    assert status == 401
    assert control.stats()["ingestion"]["refused_by_reason"] == {"invalid_token": 2}


@pytest.fixture(scope="module")
def local_auth_stack() -> Iterator[Any]:
    """Application Insights with local authentication enabled (infra/ disables it)."""
    from dataclasses import replace

    from devstack import DevStack
    from devstack.config import load_config

    with DevStack(replace(load_config(), ingestion_local_auth=True)) as stack:
        yield stack


async def test_with_local_auth_unauthenticated_posts_are_accepted_and_tokens_still_checked(local_auth_stack):
    assert (await _post_as(local_auth_stack, None))[0] == 200
    assert (await _post_as(local_auth_stack, "host"))[0] == 200
    # A token is checked even then: an identity without the role is refused (403).
    assert (await _post_as(local_auth_stack, "reader"))[0] == 403


def test_the_exporter_of_an_identity_without_the_role_is_refused_and_counted(endpoints, control, exporter_auth):
    from azure.identity import ManagedIdentityCredential

    provider = TracerProvider(resource=RESOURCE)
    with ManagedIdentityCredential(client_id=endpoints["identities"]["reader"]["client_id"]) as reader:
        exporter = AzureMonitorTraceExporter(connection_string=endpoints["connection_string"], credential=reader,
                                             disable_offline_storage=True, retry_total=0, tracer_provider=provider)
        span = provider.get_tracer(__name__).start_span("refused")
        span.end()
        assert exporter.export([span]) == SpanExportResult.FAILURE
    assert control.telemetry() == []
    stats = control.stats()["ingestion"]
    assert stats["refused_requests"] == 1
    assert stats["refused_by_reason"] == {"forbidden": stats["refused_items"]} and stats["refused_items"] >= 1
