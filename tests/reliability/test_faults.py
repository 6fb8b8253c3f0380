"""Faults of the identity endpoint, APIM, the backend and ingestion, through the real functions.

Each fault ends in success after a safe retry, or in a clear typed JSON error
(for the timer: a failed invocation with a clear message). The counts asserted
here are the failure-behaviour table in the README.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from azure.core.pipeline.transport import RequestsTransport

from devstack import DevStack
from devstack.appsettings import app_settings
from devstack.config import load_config
from devstack.invocation import timer_request
from shared import runtime, telemetry
from shared.apim import Timeouts
from shared.errors import AccessDenied, ConfigurationError, TokenError, UpstreamError, UpstreamUnavailable
from tests.plugin import FUNCTIONS, SETTING_NAMES, Control, http_request, invocation_context
from tests.reliability.conftest import SLOW_MS, closed_port, error_of, eventually

proxy, health, timer = FUNCTIONS["apim_proxy"], FUNCTIONS["apim_health"], FUNCTIONS["apim_timer"]
ORDER = json.dumps({"item": "widget", "quantity": 2}).encode()
JSON = {"Content-Type": "application/json"}


async def get(path: str = "status"):
    return await proxy(http_request("GET", path), invocation_context())


async def post(path: str = "orders", body: bytes = ORDER):
    return await proxy(http_request("POST", path, body=body, headers=JSON), invocation_context())


async def run_timer() -> None:
    await timer(timer_request(past_due=False), invocation_context("apim_timer"))


def counts(control: Control) -> dict[str, Any]:
    stats = control.stats()
    return {
        "token_requests": stats.get("identity", {}).get("token_requests", 0),
        "apim": stats.get("apim", {}).get("requests", 0),
        "apim_by_status": stats.get("apim", {}).get("by_status", {}),
        "backend_get": stats.get("backend", {}).get("by_method", {}).get("GET", 0),
        "backend_post": stats.get("backend", {}).get("by_method", {}).get("POST", 0),
    }


# --- the identity endpoint -------------------------------------------------------------------

@pytest.mark.parametrize("status", [500, 503])
@pytest.mark.parametrize("times", [1, 2])
async def test_identity_error_then_ok_is_retried_by_azure_identity(use_stack, control, backoff, status, times):
    await use_stack("reader")
    control.fault("identity", status=status, times=times)
    response = await get()
    assert response.status_code == 200, response.get_body()
    assert counts(control)["token_requests"] == times + 1


async def test_identity_error_that_persists_is_a_token_error_after_three_retries(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("identity", status=500, times=100)
    error = error_of(await get(), 502, "token_error")
    assert "HTTP 500" in error["message"] and "retry" in error["hint"]
    assert counts(control)["token_requests"] == 4  # azure-identity: one try and three retries
    assert counts(control)["apim"] == 0  # no call goes out without a token


async def test_a_burst_against_a_failing_identity_endpoint_shares_one_fetch(use_stack, control, backoff):
    # Every queued invocation retrying in turn would be a storm, and the last caller would
    # wait for all of them: one fetch (with azure-identity's retries) answers the whole burst.
    await use_stack("reader")
    control.fault("identity", status=503, times=1000)
    responses = await asyncio.gather(*(get() for _ in range(20)))
    for response in responses:
        error_of(response, 502, "token_error")
    assert counts(control)["token_requests"] == 4
    control.clear_faults()
    assert (await get()).status_code == 200  # the failure is not remembered once the endpoint is back



@pytest.fixture
def fetch_limit() -> Any:
    """A token fetch bounded at 0.5 s, retries and waits included (30 s by default)."""
    runtime.use_timeouts(runtime.RuntimeTimeouts(token_fetch=0.5))
    yield 0.5
    runtime.use_timeouts(runtime.RuntimeTimeouts())


async def test_an_identity_endpoint_asking_for_a_long_wait_is_a_token_error_within_the_fetch_limit(
        use_stack, control, fetch_limit):
    # azure-identity waits out any Retry-After, and every caller of the identity waits on that one fetch.
    await use_stack("reader")
    control.fault("identity", status=429, retry_after=3600, times=1)
    first, joined = await asyncio.gather(get(), get())
    for response in (first, joined):
        error = error_of(response, 504, "token_error")
        assert "managed-identity endpoint within 0.5 s" in error["message"] and "APIM" not in error["message"]
        assert "IDENTITY_ENDPOINT" in error["hint"]
    seen = counts(control)
    assert (seen["token_requests"], seen["apim"]) == (1, 0)
    assert (await get()).status_code == 200  # the fetch that waited is over: the next one gets a token


async def test_a_call_whose_budget_runs_out_while_it_waits_for_a_token_blames_the_token(use_stack, control):
    runtime.use_timeouts(runtime.RuntimeTimeouts(apim=Timeouts(total=0.3), token_fetch=0.6))
    try:
        await use_stack("reader")
        control.fault("identity", status=429, retry_after=3600, times=1)
        error = error_of(await get(), 504, "token_error")
        assert "managed-identity endpoint within the call's time limit" in error["message"]
        assert counts(control)["apim"] == 0
        await until_a_call_succeeds()  # once the shared fetch has ended at its own limit
    finally:
        runtime.use_timeouts(runtime.RuntimeTimeouts())


async def test_a_call_out_of_time_while_it_renews_after_apims_401_reports_the_401(use_stack, control):
    # APIM took most of the budget to refuse the token: its 401 is the answer, not the renewal's delay.
    runtime.use_timeouts(runtime.RuntimeTimeouts(apim=Timeouts(total=1.0, read=0.9), token_fetch=0.5))
    try:
        await use_stack("reader")
        assert (await get()).status_code == 200
        control.fault("apim", status=401, delay_ms=700, times=1)
        control.fault("identity", status=429, retry_after=3600, times=1)
        error_of(await get(), 401, "access_denied")
        await until_a_call_succeeds()
    finally:
        runtime.use_timeouts(runtime.RuntimeTimeouts())


async def until_a_call_succeeds() -> None:
    for _ in range(50):  # up to 5 s of tries: a fetch still under way answers its waiters first
        if (await get()).status_code == 200:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("no call succeeded once the faults were used up")

async def test_a_failed_token_acquisition_is_exported_with_its_error_type(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("identity", status=503, times=4)
    context = invocation_context()
    error_of(await proxy(http_request("GET", "status"), context), 502, "token_error")
    telemetry.flush()
    [span] = [e["data"]["baseData"] for e in control.telemetry()
              if e["tags"].get("ai.operation.id") == context.trace_id
              and e["data"]["baseData"].get("name") == "apim.token.acquire"]
    assert span["success"] is False
    assert span["properties"]["token.outcome"] == "failure"
    assert span["properties"]["token.error_type"] == "TokenError"


async def test_identity_endpoint_down_is_a_token_error_not_an_apim_error(use_stack, control, backoff):
    await use_stack("reader", IDENTITY_ENDPOINT=f"http://127.0.0.1:{closed_port()}/msi/token")
    error = error_of(await get(), 502, "token_error")
    assert "managed-identity endpoint" in error["message"] and "APIM" not in error["message"]
    assert "IDENTITY_ENDPOINT" in error["hint"]
    assert counts(control)["apim"] == 0
    with pytest.raises(TokenError, match="Could not connect to the managed-identity endpoint"):
        await run_timer()
    response = await health(http_request("GET", "health", query="probe=token"), invocation_context("apim_health"))
    error_of(response, 502, "token_error")


@pytest.mark.parametrize(("times", "status"), [(1, 200), (100, 502)])
async def test_identity_connection_dropped_mid_response(use_stack, control, backoff, times, status):
    await use_stack("reader")
    control.fault("identity", drop_connection=True, times=times)
    response = await get()
    if status == 200:
        assert response.status_code == 200
        assert counts(control)["token_requests"] == 2
    else:
        error = error_of(response, 502, "token_error")
        assert "managed-identity endpoint failed before a complete answer" in error["message"]
        assert counts(control)["token_requests"] == 4


async def test_identity_slow_past_the_timeout_is_a_token_timeout(use_stack, control, backoff, short_timeouts):
    await use_stack("reader")
    control.fault("identity", delay_ms=SLOW_MS, times=4)
    error = error_of(await get(), 504, "token_error")
    assert "managed-identity endpoint did not answer in time" in error["message"]
    assert counts(control)["token_requests"] == 4  # each attempt bounded, then retried three times
    assert counts(control)["apim"] == 0
    # The endpoint issues the tokens after we stopped waiting: let them land before the next test.
    await eventually(lambda: control.stats()["identity"].get("tokens_issued", 0) == 4, "late tokens issued")


async def test_identity_slow_once_is_retried(use_stack, control, backoff, short_timeouts):
    await use_stack("reader")
    control.fault("identity", delay_ms=SLOW_MS, times=1)
    assert (await get()).status_code == 200
    assert counts(control)["token_requests"] == 2
    await eventually(lambda: control.stats()["identity"].get("tokens_issued", 0) == 2, "late token issued")


async def test_malformed_token_response_is_a_clear_token_error(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("identity", status=200, malformed_body=True, times=1)
    error = error_of(await get(), 502, "token_error")
    assert "not a token response" in error["message"]
    assert counts(control)["token_requests"] == 1  # a 200 is not retried
    assert (await get()).status_code == 200  # the next invocation gets a token


@pytest.fixture(scope="module")
def short_lived_stack():
    """A second stack whose tokens live 3 s, so they expire while a burst is in flight."""
    with DevStack(load_config(token_lifetime_seconds=3)) as stack:
        yield stack


async def test_token_expiring_during_a_burst_is_refreshed_once(short_lived_stack, monkeypatch):
    control = Control(short_lived_stack.endpoints["control_url"])
    control.reset()
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in app_settings(short_lived_stack.endpoints).items():
        if name != "APPLICATIONINSIGHTS_CONNECTION_STRING":  # telemetry keeps going to the session stack
            monkeypatch.setenv(name, value)
    await runtime.reset_runtime()
    try:
        # Every first attempt is held at the gateway until its token has expired: APIM refuses
        # all 50 with 401, and all 50 renewals must share one fresh token.
        control.fault("apim", delay_ms=4000, times=50)
        responses = await asyncio.gather(*(get() for _ in range(50)))
        assert {r.status_code for r in responses} == {200}
        stats = counts(control)
        assert stats["apim_by_status"] == {"401": 50, "200": 50}
        assert stats["token_requests"] == 2  # the first token, and one refresh for the whole burst
        assert stats["backend_get"] == 50  # each call reached the API once
    finally:
        await runtime.reset_runtime()


# --- APIM and the backend: reads -------------------------------------------------------------

async def test_apim_503_then_ok_is_retried_for_get(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("apim", status=503, times=2)
    assert (await get()).status_code == 200
    stats = counts(control)
    assert (stats["apim"], stats["backend_get"]) == (3, 1)
    assert len(backoff) == 1  # azure-core: the first retry is immediate, then exponential backoff


async def test_backend_503_then_ok_is_retried_for_get(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("backend", status=503, times=1)
    assert (await get()).status_code == 200
    assert counts(control)["backend_get"] == 2


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_5xx_with_a_long_retry_after_goes_back_at_once_with_the_header(use_stack, control, backoff,
                                                                               method):
    await use_stack("reader")
    control.fault("apim", status=503, retry_after=120, times=1)
    body, headers = (ORDER, JSON) if method == "POST" else (b"", None)
    response = await proxy(http_request(method, "orders", body=body, headers=headers), invocation_context())
    error = error_of(response, 503, "upstream_error")
    assert error["message"].startswith("APIM answered 503") and "retries" not in error["message"]
    assert response.headers["Retry-After"] == "120"  # the caller decides whether to wait that long
    assert counts(control)["apim"] == 1 and backoff == []


async def test_apim_5xx_that_persists_is_an_upstream_error_after_three_retries(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("apim", status=503, times=100)
    error = error_of(await get(), 503, "upstream_error")
    assert error["message"].startswith("APIM answered 503 after 3 retries")
    assert counts(control)["apim"] == 4
    with pytest.raises(UpstreamError, match="APIM answered 503"):
        await run_timer()


async def test_apim_429_retry_after_is_honoured(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("apim", status=429, retry_after=1, times=2)
    assert (await get()).status_code == 200
    assert backoff == [1, 1]  # waited what APIM asked, before each retry
    assert counts(control)["apim"] == 3


async def test_apim_429_is_bounded_in_attempts(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("apim", status=429, retry_after=1, times=100)
    response = await get()
    error = error_of(response, 429, "throttled")
    assert "Retry-After" in error["hint"]
    assert response.headers["Retry-After"] == "1"
    assert counts(control)["apim"] == 4 and backoff == [1, 1, 1]


async def test_apim_429_with_a_long_retry_after_is_handed_to_the_caller(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("apim", status=429, retry_after=120, times=1)
    response = await get()
    error_of(response, 429, "throttled")
    assert response.headers["Retry-After"] == "120"  # the caller decides whether to wait that long
    assert counts(control)["apim"] == 1 and backoff == []


@pytest.mark.parametrize("status", [403, 404])
async def test_a_4xx_with_retry_after_is_not_retried(use_stack, control, backoff, status):
    # APIM's quota policy answers 403 with a Retry-After until the quota period renews; a
    # retry within the call cannot succeed. Retry-After sets the wait, not whether to retry.
    await use_stack("reader")
    control.fault("apim", status=status, retry_after=1, times=1)
    assert (await get()).status_code == status
    assert counts(control)["apim"] == 1 and backoff == []


async def test_apim_slow_past_the_timeout_is_retried_for_get(use_stack, control, backoff, short_timeouts):
    await use_stack("reader")
    control.fault("apim", delay_ms=SLOW_MS, times=1)
    assert (await get()).status_code == 200
    assert counts(control)["apim"] == 2
    await eventually(lambda: counts(control)["backend_get"] == 2, "the abandoned GET reached the backend")


async def test_apim_slow_that_persists_is_an_upstream_timeout(use_stack, control, backoff, short_timeouts):
    await use_stack("reader")
    control.fault("apim", delay_ms=SLOW_MS, times=4)
    error_of(await get(), 504, "upstream_timeout")
    assert counts(control)["apim"] == 4
    # Every abandoned attempt still reached the API: why only reads are retried after a timeout.
    await eventually(lambda: counts(control)["backend_get"] == 4, "abandoned GETs reached the backend")


@pytest.mark.parametrize("fault", ["slow", "refused"])
async def test_each_send_without_an_answer_is_a_failed_dependency_that_says_why(use_stack, control, backoff,
                                                                              short_timeouts, fault):
    if fault == "slow":
        await use_stack("reader")
        control.fault("apim", delay_ms=SLOW_MS, times=4)
    else:
        await use_stack("reader", APIM_BASE_URL=f"http://127.0.0.1:{closed_port()}/orders")
    telemetry.flush()  # nothing of earlier tests left to export
    context = invocation_context()
    await proxy(http_request("GET", "status"), context)
    telemetry.flush()
    sends = [e["data"]["baseData"] for e in control.telemetry() if e["tags"].get("ai.operation.id") == context.trace_id
             and e["data"]["baseType"] == "RemoteDependencyData" and e["data"]["baseData"]["type"] == "HTTP"
             and e["data"]["baseData"]["name"].startswith("GET /orders")]
    expected = "TimeoutError" if fault == "slow" else "ServiceRequestError"  # a time limit, not a cancellation
    assert [(d["success"], d["properties"].get("apim.error_type")) for d in sends] == [(False, expected)] * 4
    if fault == "slow":  # the abandoned GETs still reach the backend: let them land before the next test counts
        await eventually(lambda: counts(control)["backend_get"] == 4, "abandoned GETs reached the backend")


async def test_connection_dropped_mid_response_is_retried_for_get(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("apim", drop_connection=True, times=1)
    assert (await get()).status_code == 200
    assert counts(control)["apim"] == 2


async def test_connection_dropped_every_time_is_upstream_unavailable(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("apim", drop_connection=True, times=100)
    error = error_of(await get(), 502, "upstream_unavailable")
    assert "failed before a complete answer" in error["message"]
    assert counts(control)["apim"] == 4


async def test_apim_unreachable_is_upstream_unavailable(use_stack, control, backoff):
    await use_stack("reader", APIM_BASE_URL=f"http://127.0.0.1:{closed_port()}/orders")
    error = error_of(await get(), 502, "upstream_unavailable")
    assert "Could not connect to APIM" in error["message"] and "APIM_BASE_URL" in error["hint"]
    assert len(backoff) == 2  # three connect retries: immediate, then two backoff waits


async def test_apim_401_with_a_new_platform_token_is_sent_once_more(use_stack, control, backoff):
    await use_stack("reader")
    assert (await get()).status_code == 200
    control.roll_over_tokens()  # the platform has replaced its cached token since
    control.fault("apim", status=401, times=1)
    assert (await get()).status_code == 200
    assert counts(control)["token_requests"] == 2
    assert counts(control)["apim_by_status"] == {"200": 2, "401": 1}


async def test_apim_401_with_the_same_platform_token_is_not_sent_again(use_stack, control, backoff):
    # As in Azure: the platform hands back the token APIM just refused, so resending is pointless.
    await use_stack("reader")
    assert (await get()).status_code == 200
    control.fault("apim", status=401, times=1)
    error_of(await get(), 401, "access_denied")
    assert counts(control)["token_requests"] == 2  # one request that bypassed the client's cache
    assert counts(control)["apim_by_status"] == {"200": 1, "401": 1}


async def test_apim_401_twice_is_access_denied_with_a_hint(use_stack, control, backoff, endpoints):
    await use_stack("reader")
    assert (await get()).status_code == 200
    control.reset()
    control.fault("apim", status=401, times=2)
    error = error_of(await get(), 401, "access_denied")
    assert "audience" in error["hint"] and "API_APP_ID_URI" in error["hint"]
    assert endpoints["identities"]["reader"]["client_id"] in error["hint"]
    assert counts(control)["token_requests"] == 1  # exactly one fresh token, then no more
    assert counts(control)["apim"] == 2  # the call, and one resend with the fresh token
    control.fault("apim", status=401, times=2)
    with pytest.raises(AccessDenied, match="APIM rejected the token"):
        await run_timer()


# --- writes: each POST is carried out at most once ---------------------------------------------

# (fault, caller status, caller error code, APIM requests, POSTs the backend recorded, orders created)
WRITE_CASES = {
    "no fault": (None, 201, None, 1, 1, 1),
    "APIM 429 Retry-After once": ({"service": "apim", "status": 429, "retry_after": 1}, 201, None, 2, 1, 1),
    # The API refused it (429: not carried out), so it is sent again and reaches the backend twice.
    "backend 429 Retry-After once": ({"service": "backend", "status": 429, "retry_after": 1}, 201, None, 2, 2, 1),
    # The platform hands back the same token: not resent (a new one would be, once).
    "APIM 401 once": ({"service": "apim", "status": 401}, 401, "access_denied", 1, 0, 0),
    "identity 503 once": ({"service": "identity", "status": 503}, 201, None, 1, 1, 1),
    "APIM 500": ({"service": "apim", "status": 500}, 500, "upstream_error", 1, 0, 0),
    "APIM 503 Retry-After": ({"service": "apim", "status": 503, "retry_after": 1}, 503, "upstream_error", 1, 0, 0),
    "backend 500": ({"service": "backend", "status": 500}, 500, "upstream_error", 1, 1, 0),
    "backend 503 Retry-After": ({"service": "backend", "status": 503, "retry_after": 1}, 503, "upstream_error",
                                1, 1, 0),
    "APIM drops the connection": ({"service": "apim", "drop_connection": True}, 502, "upstream_unavailable", 1, 0,
                                  0),
    "backend drops the connection": ({"service": "backend", "drop_connection": True}, 500, "upstream_error", 1, 1,
                                     0),
    # The caller gives up; the write still lands, once: the caller must check before repeating it.
    "APIM slow past the timeout": ({"service": "apim", "delay_ms": SLOW_MS}, 504, "upstream_timeout", 1, 1, 1),
    "backend slow past the timeout": ({"service": "backend", "delay_ms": SLOW_MS}, 504, "upstream_timeout", 1, 1,
                                      1),
    "identity down": ("identity down", 502, "token_error", 0, 0, 0),
}


@pytest.mark.parametrize("case", list(WRITE_CASES))
async def test_a_post_is_carried_out_at_most_once(use_stack, control, backoff, request, case):
    fault, status, code, apim_requests, backend_posts, created = WRITE_CASES[case]
    if "slow" in case:
        request.getfixturevalue("short_timeouts")
    if fault == "identity down":
        await use_stack("reader", IDENTITY_ENDPOINT=f"http://127.0.0.1:{closed_port()}/msi/token")
    else:
        await use_stack("reader")
        if fault:
            control.fault(**fault, method="GET" if fault["service"] == "identity" else "POST")
    response = await post()
    if code is None:
        assert response.status_code == status, response.get_body()
    else:
        error_of(response, status, code)
    if "slow" in case:  # the write lands after the caller gave up; wait for it, then count
        await eventually(lambda: any(r["status"] and r["method"] == "POST" for r in control.backend_requests()),
                         "the abandoned POST")
    stats = counts(control)
    assert (stats["apim"], stats["backend_post"]) == (apim_requests, backend_posts)
    recorded = [r for r in control.backend_requests() if r["method"] == "POST"]
    assert sum(r["status"] == 201 for r in recorded) == created


async def test_put_and_delete_are_retried_like_reads(use_stack, control, backoff):
    # Idempotent by definition: a repeat has the effect of one. (The sample API has no PUT or
    # DELETE operation, so APIM answers 404; what counts is how often APIM was called.)
    await use_stack("reader")
    for method in ("PUT", "DELETE"):
        control.reset()
        control.fault("apim", status=503, times=1)
        response = await proxy(http_request(method, "orders/1001", body=ORDER, headers=JSON), invocation_context())
        assert response.status_code == 404, response.get_body()
        assert counts(control)["apim"] == 2


async def test_patch_is_not_retried_like_post(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("apim", status=503, times=1)
    response = await proxy(http_request("PATCH", "orders/1001", body=ORDER, headers=JSON), invocation_context())
    error_of(response, 503, "upstream_error")
    assert counts(control)["apim"] == 1


# --- the timer -----------------------------------------------------------------------------------

async def test_timer_succeeds_after_a_safe_retry(use_stack, control, backoff, caplog):
    await use_stack("reader")
    control.fault("apim", status=503, times=1)
    with caplog.at_level(logging.INFO, logger="shared"):
        await run_timer()
    assert any("answered 200" in r.getMessage() for r in caplog.records)


async def test_timer_failures_are_typed_and_clear(use_stack, control, backoff):
    await use_stack("reader")
    control.fault("apim", drop_connection=True, times=4)
    with pytest.raises(UpstreamUnavailable) as caught:
        await run_timer()
    assert str(caught.value) == "The connection to APIM failed before a complete answer."
    assert caught.value.__context__ is None  # no library exception chained, shown or hidden
    await use_stack("reader", TIMER_API_PATH=None)
    with pytest.raises(ConfigurationError, match="TIMER_API_PATH is not set"):
        await run_timer()


# --- Application Insights ingestion ----------------------------------------------------------------

@pytest.fixture
def exporter_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exporter retries on its own thread through azure-core's sync transport: don't sleep there."""
    monkeypatch.setattr(RequestsTransport, "sleep", lambda self, duration: None)


@pytest.mark.parametrize("fault", [{"status": 500}, {"status": 503, "retry_after": 1}, {"drop_connection": True}],
                         ids=["500", "503", "down"])
async def test_telemetry_failure_never_fails_a_call(use_stack, control, exporter_backoff, fault):
    await use_stack("reader")
    telemetry.flush()  # nothing of earlier tests left to export
    control.reset()
    control.fault("ingestion", times=3, **fault)
    responses = [await get(), await post()]
    await run_timer()
    telemetry.flush()
    assert [r.status_code for r in responses] == [200, 201]
    assert control.stats()["ingestion"]["requests"] >= 1  # the exporter met the fault: its first request failed
