"""The real functions against the devstack: identity → token → APIM policy → backend → App Insights.

Invoked as the host would (HttpRequest, TimerRequest, a context with a trace
parent), configured only through app settings and IDENTITY_ENDPOINT/IDENTITY_HEADER.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from azure.core.credentials import AccessTokenInfo

from devstack.appsettings import OFFLINE_EXPORTER_SETTINGS
from devstack.config import load_config
from devstack.invocation import timer_request
from shared import runtime, telemetry
from shared.errors import TokenError, UpstreamError
from tests.plugin import FUNCTIONS, SAMPLE_BACKEND, http_request, invocation_context

proxy, health, timer = FUNCTIONS["apim_proxy"], FUNCTIONS["apim_health"], FUNCTIONS["apim_timer"]
ORDER = json.dumps({"item": "widget", "quantity": 2}).encode()
JSON = {"Content-Type": "application/json"}
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def body(response) -> dict:
    return json.loads(response.get_body())


async def test_reader_get_succeeds(use_stack, control):
    await use_stack("reader")
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert response.status_code == 200, response.get_body()
    assert response.mimetype == "application/json"
    assert control.stats()["identity"]["token_requests"] == 1


async def test_writer_post_succeeds_once(use_stack, control, endpoints):
    await use_stack("reader")  # reads as reader, writes as writer
    response = await proxy(http_request("POST", "orders", body=ORDER, headers=JSON), invocation_context())
    assert response.status_code == 201, response.get_body()
    assert body(response)["item"] == "widget"
    posts = [r for r in control.backend_requests() if r["method"] == "POST"]
    assert len(posts) == 1
    assert posts[0]["caller_client_id"] == endpoints["identities"]["writer"]["client_id"]
    # The whole chain: APIM checked the writer's token, then called the sample backend
    # (infra/sample-backend/policy.xml) with a token of its own managed identity.
    assert posts[0]["token_claims"]["oid"] != endpoints["identities"]["writer"]["principal_id"]
    assert posts[0]["token_claims"]["aud"] == load_config().sample_backend.app.client_id


async def test_query_reaches_the_backend_without_the_function_key(use_stack, control):
    await use_stack("reader")
    response = await proxy(http_request("GET", "orders", query="code=function-key&top=1"), invocation_context())
    assert response.status_code == 200
    seen = control.backend_requests()[-1]
    assert "function-key" not in json.dumps(seen)


async def test_reader_only_identity_posting_gets_the_role_hint(use_stack):
    await use_stack("reader", MANAGED_IDENTITY_WRITE_CLIENT_ID=None)
    response = await proxy(http_request("POST", "orders", body=ORDER, headers=JSON), invocation_context())
    assert response.status_code == 403
    error = body(response)["error"]
    assert error["code"] == "access_denied"
    assert "Orders.Read" in error["hint"] and "MANAGED_IDENTITY_WRITE_CLIENT_ID" in error["hint"]


async def test_an_identity_with_the_role_but_not_a_listed_client_gets_the_client_application_ids_hint(
        use_stack, control, endpoints):
    # The host identity is given the read role, so Entra issues it a token for the API, but the API policy's
    # validate-azure-ad-token lists only the reader, the writer and the Azure CLI as client applications.
    control.assign_role("host", endpoints["api_roles"]["read"])
    await use_stack("host")
    response = await proxy(http_request("GET", "orders"), invocation_context())
    assert response.status_code == 401
    hint = body(response)["error"]["hint"]
    host = endpoints["identities"]["host"]["client_id"]
    assert "client-application-ids" in hint and host in hint
    assert control.backend_requests() == []


async def test_an_identity_without_an_app_role_gets_no_token_and_the_hint_says_why(use_stack, control, backoff):
    # The API requires assignment (as infra/ deploys it), so Entra refuses the token, and App Service
    # reports that as its vague 500, which azure-identity retries: the hint names the likely causes.
    await use_stack("unassigned")
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert response.status_code == 502
    error = body(response)["error"]
    assert error["code"] == "token_error" and "HTTP 500" in error["message"]
    assert "app role" in error["hint"] and "API_APP_ID_URI" in error["hint"]
    assert control.stats().get("apim", {}).get("requests", 0) == 0  # no token, no call


async def test_wrong_key_gets_the_key_hint(use_stack):
    await use_stack("reader", APIM_SUBSCRIPTION_KEY="0" * 32)
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert response.status_code == 401
    assert "not a valid key" in body(response)["error"]["hint"]


async def test_missing_key_gets_the_key_hint(use_stack):
    await use_stack("reader", APIM_SUBSCRIPTION_KEY=None)
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert response.status_code == 401
    assert "set APIM_SUBSCRIPTION_KEY" in body(response)["error"]["hint"]


async def test_wrong_audience_fails_at_the_identity_endpoint_with_a_hint(use_stack, backoff):
    await use_stack("reader", API_APP_ID_URI="api://no-such-api")
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert response.status_code == 502
    assert "API_APP_ID_URI" in body(response)["error"]["hint"]


def _unsigned_jwt(payload: str) -> str:
    """A JWT whose payload is this JSON text as written (PyJWT's parser takes NaN, Infinity and 1e400)."""
    def part(text: str) -> str:
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
    header = part('{"alg": "RS256", "typ": "JWT"}')
    return f"{header}.{part(payload)}.c2ln"


def _strict_json(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


@pytest.mark.parametrize("claim", ["iat", "exp", "nbf"])
@pytest.mark.parametrize("value", ["Infinity", "-Infinity", "NaN", "1e400", "1" + "0" * 400, "1e300", "true",
                                   '"soon"', "null", "[1]"])
async def test_health_probe_leaves_out_a_time_claim_that_is_not_an_instant(use_stack, monkeypatch, claim, value):
    await use_stack("reader")
    times = {"iat": 1700000000, "nbf": 1700000000, "exp": 1700003600}
    payload = ", ".join(f'"{name}": {value if name == claim else times[name]}' for name in times)
    token = AccessTokenInfo(_unsigned_jwt(f'{{"aud": "api://contoso-orders", {payload}}}'), int(time.time()) + 3600)

    async def get() -> AccessTokenInfo:
        return token

    monkeypatch.setattr(runtime.get_runtime().token_source(), "get", get)
    response = await health(http_request("GET", "health", query="probe=token"), invocation_context("apim_health"))
    assert response.status_code == 200, response.get_body()
    report = _strict_json(response.get_body().decode())["token"]  # standard JSON: no NaN or Infinity in it
    assert claim not in report and report["aud"] == "api://contoso-orders"
    assert {name: report[name] for name in times if name != claim} == {n: v for n, v in times.items() if n != claim}
    assert ("issued_at" in report) == ("age_seconds" in report) == (claim != "iat")


async def test_health_probe_shows_claims_not_the_token(use_stack, endpoints):
    await use_stack("reader")
    response = await health(http_request("GET", "health", query="probe=token"), invocation_context("apim_health"))
    assert response.status_code == 200
    report = body(response)
    claims = report["token"]
    assert claims["roles"] == ["Orders.Read"]
    assert claims.get("azp", claims.get("appid")) == endpoints["identities"]["reader"]["client_id"]
    assert claims["tid"] == endpoints["tenant_id"]
    token = await runtime.get_runtime().token_source().get()
    assert token.token not in response.get_body().decode()
    # How old the token is, next to its roles: a role assigned after issued_at is not in it.
    assert claims["issued_at"] == datetime.fromtimestamp(claims["iat"], UTC).isoformat(timespec="seconds")
    assert claims["expires_at"] == datetime.fromtimestamp(token.expires_on, UTC).isoformat(timespec="seconds")
    assert 0 <= claims["age_seconds"] <= claims["exp"] - claims["iat"]
    assert 0 < claims["expires_in_seconds"] <= token.expires_on - claims["iat"]


async def test_timer_calls_the_api_and_logs_a_summary(use_stack, control, caplog):
    await use_stack("reader")
    with caplog.at_level(logging.INFO, logger="shared"):
        await timer(timer_request(past_due=True), invocation_context("apim_timer"))
    assert any("past due" in r.message for r in caplog.records)
    assert any("Scheduled call GET /status answered 200" in r.getMessage() for r in caplog.records)
    sent = [r for r in control.backend_requests() if r["path"] == f"{SAMPLE_BACKEND}/status"]
    assert len(sent) == 1, control.backend_requests()


async def test_timer_sends_the_paths_query_as_a_query(use_stack, control):
    await use_stack("reader", TIMER_API_PATH="/orders?status=open&top=2")
    await timer(timer_request(), invocation_context("apim_timer"))
    sent = [r for r in control.backend_requests() if r["path"].startswith(f"{SAMPLE_BACKEND}/orders")]
    assert [(r["path"], r["query"]) for r in sent] == [(f"{SAMPLE_BACKEND}/orders", {"status": "open", "top": "2"})]


async def test_timer_fails_on_the_apis_own_4xx(use_stack, control):
    await use_stack("reader", TIMER_API_PATH="/orders/no-such-order")
    with pytest.raises(UpstreamError, match="answered 404, not a success") as caught:
        await timer(timer_request(), invocation_context("apim_timer"))
    assert "TIMER_API_PATH" in caught.value.hint
    sent = [r for r in control.backend_requests() if r["path"] == f"{SAMPLE_BACKEND}/orders/no-such-order"]
    assert len(sent) == 1, control.backend_requests()  # not retried: the answer was final


async def test_timer_failure_fails_the_invocation_with_the_hint(use_stack, backoff):
    await use_stack("unassigned")
    with pytest.raises(TokenError, match="has an app role on it"):
        await timer(timer_request(past_due=False), invocation_context("apim_timer"))


async def test_many_concurrent_invocations_share_one_token(use_stack, control):
    import asyncio

    await use_stack("reader")
    responses = await asyncio.gather(*(proxy(http_request("GET", "status"), invocation_context())
                                       for _ in range(200)))
    assert {r.status_code for r in responses} == {200}
    assert control.stats()["identity"]["token_requests"] == 1


async def test_telemetry_arrives_correlated_with_the_invocation(use_stack, control, endpoints):
    await use_stack("reader")
    context = invocation_context()
    response = await proxy(http_request("GET", "orders"), context)
    assert response.status_code == 200
    telemetry.flush()
    envelopes = [e for e in control.telemetry() if e.get("tags", {}).get("ai.operation.id") == context.trace_id]
    names = {e["data"]["baseData"].get("name") for e in envelopes}
    assert "apim.token.acquire" in names
    dependencies = [e["data"]["baseData"] for e in envelopes if e["data"]["baseType"] == "RemoteDependencyData"]
    http_calls = [d for d in dependencies if d.get("type") == "HTTP" and "/orders/orders" in d.get("data", "")]
    assert http_calls, dependencies
    assert http_calls[0]["resultCode"] == "200"
    assert http_calls[0]["target"].startswith("127.0.0.1")
    metrics = {m["name"] for e in control.telemetry() if e["data"]["baseType"] == "MetricData"
               for m in e["data"]["baseData"]["metrics"]}
    assert {"apim.token.acquisitions", "apim.token.duration", "apim.call.duration"} <= metrics
    assert "_OTELRESOURCE_" not in metrics  # the exporter's resource metric, one billed item per export: off


async def test_no_secret_reaches_logs_responses_or_telemetry(use_stack, control, endpoints, caplog, backoff):
    settings = await use_stack("reader")
    caplog.set_level(logging.DEBUG)
    responses = [
        await proxy(http_request("GET", "orders/1"), invocation_context()),
        await proxy(http_request("POST", "orders", body=ORDER, headers=JSON), invocation_context()),
        await proxy(http_request("POST", "orders", body=b"nope", headers={"Content-Type": "text/plain"}),
                    invocation_context()),
        await health(http_request("GET", "health", query="probe=token"), invocation_context("apim_health")),
    ]
    tokens = {(await source.get()).token for source in runtime.get_runtime().token_sources.values()}
    await use_stack("unassigned")  # refused a token: the error path
    responses.append(await proxy(http_request("GET", "status"), invocation_context()))
    telemetry.flush()
    secrets = tokens | {settings["APIM_SUBSCRIPTION_KEY"], settings["IDENTITY_HEADER"]}
    captured = "\n".join(r.getMessage() for r in caplog.records)
    captured += "\n".join(r.get_body().decode() + json.dumps(dict(r.headers)) for r in responses)
    captured += json.dumps(control.telemetry())
    for secret in secrets:
        assert secret and secret not in captured


def test_shutdown_leaves_no_exporter_running(endpoints):
    # Live Metrics keeps a meter provider of its own; after shutdown() nothing may go on
    # sending (demo, benchmarks and this suite stop the stand-in right after). A fresh
    # interpreter, so the suite's own telemetry is left alone.
    code = textwrap.dedent("""
        import threading
        from shared import telemetry
        assert telemetry.configure() == "app"
        assert threading.active_count() > 1  # the exporters (Live Metrics among them) are running
        telemetry.shutdown()
        for thread in threading.enumerate():
            if thread is not threading.main_thread():
                thread.join(timeout=10)
        print(sorted(t.name for t in threading.enumerate() if t is not threading.main_thread()))
    """)
    # Live Metrics on, which the offline settings turn off: the stand-in's connection string
    # names its own loopback LiveEndpoint, so the pings stay local.
    env = {**os.environ, **OFFLINE_EXPORTER_SETTINGS, telemetry.LIVE_METRICS_SETTING: "true",
           "APPLICATIONINSIGHTS_CONNECTION_STRING": endpoints["connection_string"]}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                            cwd=str(PROJECT_ROOT))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


async def test_a_failing_token_report_is_a_typed_error_not_an_unhandled_exception(use_stack, monkeypatch):
    await use_stack("reader")

    def broken(token: AccessTokenInfo) -> dict:
        raise OverflowError("cannot convert float infinity to integer")

    monkeypatch.setattr("shared.handlers.token_report", broken)
    response = await health(http_request("GET", "health", query="probe=token"), invocation_context("apim_health"))
    assert response.status_code == 500 and body(response)["error"]["code"] == "internal_error"
    assert "infinity" not in response.get_body().decode()
