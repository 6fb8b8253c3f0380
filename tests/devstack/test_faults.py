"""Fault injection through the control API, on the backend and ingestion stand-ins."""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from tests.devstack.conftest import ingestion_session
from tests.plugin import apim_token

Call = Callable[..., Awaitable[tuple[int, dict[str, str], bytes]]]
SERVICES = ["backend", "ingestion"]


def _telemetry_item(endpoints: dict[str, Any]) -> dict[str, Any]:
    ikey = endpoints["connection_string"].split(";")[0].split("=", 1)[1]
    return {"name": "Microsoft.ApplicationInsights.Message", "time": datetime.now(UTC).isoformat(), "iKey": ikey,
            "data": {"baseType": "MessageData", "baseData": {"ver": 2, "message": "fault test"}}}


@pytest.fixture
async def call(devstack, endpoints, control) -> AsyncIterator[Callable[[str], Call]]:
    """`call(service)(method=...)` sends that service's everyday request and reads the whole answer."""
    requests = {
        "backend": ("GET", endpoints["sample_backend_url"] + "/status", None),
        "ingestion": ("POST", endpoints["ingestion_endpoint"] + "/v2.1/track", [_telemetry_item(endpoints)]),
    }
    # The sample backend takes APIM's token; the session sends ingestion's own.
    headers = {"backend": {"Authorization": f"Bearer {apim_token(devstack)}"}, "ingestion": {}}
    async with ingestion_session(devstack) as session:  # trusts ingestion's certificate, sends a token
        def for_service(service: str) -> Call:
            default_method, url, body = requests[service]

            async def send(method: str = default_method, path: str = "") -> tuple[int, dict[str, str], bytes]:
                async with session.request(method, url + path, json=body, headers=headers[service]) as response:
                    return response.status, dict(response.headers), await response.read()
            return send
        yield for_service


@pytest.mark.parametrize("service", SERVICES)
async def test_status_with_retry_after(call, control, service):
    control.fault(service, status=503, retry_after=2)
    status, headers, body = await call(service)()
    assert (status, headers["Retry-After"]) == (503, "2")
    assert json.loads(body)  # an error body the client can parse
    status, headers, _ = await call(service)()  # times defaults to 1
    assert status == 200 and "Retry-After" not in headers


async def test_each_service_shapes_its_error_body_like_the_real_one(call, control):
    control.fault("ingestion", status=429)
    _, _, body = await call("ingestion")()
    assert json.loads(body)["errors"][0]["statusCode"] == 429  # a TrackResponse, as Breeze sends
    control.fault("backend", status=500)
    _, _, body = await call("backend")()
    assert json.loads(body)["error"]["code"] == "InjectedFault"


@pytest.mark.parametrize("service", SERVICES)
async def test_delay_then_the_normal_answer(call, control, service):
    control.fault(service, delay_ms=300)
    started = time.monotonic()
    status, _, _ = await call(service)()
    assert status == 200
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("service", SERVICES)
async def test_drop_connection_cuts_the_response_short(call, control, service):
    control.fault(service, drop_connection=True)
    with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError)):
        await call(service)()
    status, _, _ = await call(service)()
    assert status == 200


@pytest.mark.parametrize("service", SERVICES)
async def test_malformed_body_is_not_json(call, control, service):
    control.fault(service, malformed_body=True, status=200)
    status, headers, body = await call(service)()
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)


@pytest.mark.parametrize("service", SERVICES)
async def test_times_counts_down_then_the_fault_is_gone(call, control, service):
    control.fault(service, status=500, times=3)
    statuses = []
    for _ in range(4):
        statuses.append((await call(service)())[0])
        remaining = control.faults()
        assert [f["times"] for f in remaining] == ([3 - len(statuses)] if len(statuses) < 3 else [])
    assert statuses == [500, 500, 500, 200]


async def test_method_limits_the_fault(devstack, control, endpoints):
    control.fault("backend", status=503, method="post")
    url = endpoints["sample_backend_url"]
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {apim_token(devstack)}"}) as session:
        async with session.get(f"{url}/orders") as response:
            assert response.status == 200  # a GET does not consume the POST-only fault
        assert [f["method"] for f in control.faults()] == ["POST"]
        async with session.post(f"{url}/orders", json={"item": "p", "quantity": 1}) as response:
            assert response.status == 503
    assert control.faults() == []


async def test_a_faulted_post_never_reaches_the_handler(control, endpoints):
    # The inventory backend keeps state (the sample backend keeps none): a faulted receipt adds no stock.
    control.fault("backend", status=503, method="POST")
    url = endpoints["backend_url"] + "/inventory/items"
    async with aiohttp.ClientSession() as session:
        async with session.get(url) as response:
            before = await response.json()
        async with session.post(url, json={"item": "widget", "quantity": 1}) as response:
            assert response.status == 503
        async with session.get(url) as response:
            assert await response.json() == before
    # ...but it reached the service, so it is counted and recorded.
    assert control.stats()["backend"]["by_method"]["POST"] == 1
    assert [(r["method"], r["status"]) for r in control.backend_requests()][1] == ("POST", 503)


@pytest.mark.parametrize("service", SERVICES)
async def test_delete_clears_every_fault(call, control, service):
    control.fault(service, status=500, times=10)
    control.fault(service, drop_connection=True)
    control.clear_faults()
    assert control.faults() == []
    assert (await call(service)())[0] == 200


@pytest.mark.parametrize("spec", [
    {"service": "backend", "times": 0},
    {"service": "backend", "times": True},
    {"service": "backend", "status": 700},
    {"service": "backend", "delay_ms": -1},
    {"service": "backend", "delay_ms": "100"},
    {"service": "backend", "retry_after": 1.5},
    {"service": "backend", "drop_connection": "yes"},
    {"service": "backend", "method": "GET /orders"},
    {"service": "backend", "colour": "red"},
    {"times": 1},
    [],
])
def test_bad_specs_are_refused_with_a_400(control, spec):
    with pytest.raises(urllib.error.HTTPError, match="400"):
        control._call("POST", "/faults", spec)
    assert control.faults() == []
