"""No secret in any channel: log lines of every library, answers to any call, telemetry, `health`, messages.

Each test has an upstream echo a secret where a hostile or careless service might.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from aiohttp import web

from devstack.appsettings import OFFLINE_EXPORTER_SETTINGS
from devstack.invocation import timer_request
from shared import runtime, telemetry
from shared.errors import UpstreamError
from tests.plugin import FUNCTIONS, http_request, invocation_context
from tests.reliability.conftest import Capture, Listener

proxy, health, timer = FUNCTIONS["apim_proxy"], FUNCTIONS["apim_health"], FUNCTIONS["apim_timer"]


def percent(secret: str) -> str:
    return "".join(f"%{byte:02X}" for byte in secret.encode())


# --- log lines: a secret in another encoding, in what a library logs of an answer ----------------------

@pytest.mark.parametrize("header", ["ETag", "WWW-Authenticate", "x-ms-error-code"])
async def test_a_percent_encoded_secret_in_a_logged_answer_header_is_redacted(use_stack, backoff, debug_everything,
                                                                              header):
    def respond(request: web.Request) -> web.Response:
        token = request.headers["Authorization"].removeprefix("Bearer ")
        key = request.headers["Ocp-Apim-Subscription-Key"]
        return web.json_response({"ok": True}, headers={header: f'"t={percent(token)};k={percent(key)}"'})

    upstream = Listener(respond=respond)
    await upstream.start()
    try:
        key = secrets.token_hex(16)
        await use_stack("reader", APIM_BASE_URL=f"http://{upstream.host}/orders", APIM_SUBSCRIPTION_KEY=key)
        response = await proxy(http_request("GET", "status"), invocation_context())
        token = runtime.get_runtime().token_source("GET").token.token
    finally:
        await upstream.stop()
    assert response.status_code == 200
    assert percent(token) not in json.dumps(dict(response.headers))  # what the caller gets is redacted
    logged = [line.strip()[:100] for line in "\n".join(debug_everything.lines).splitlines()
              if percent(token) in line or percent(key) in line]
    assert not logged, f"a percent-encoded secret is in a DEBUG log line: {logged}"


async def test_identity_header_percent_encoded_in_the_identity_endpoints_answer_is_not_logged(use_stack, backoff):
    # azure-identity's own pipeline logs each request and answer at INFO, the Functions worker's level.
    def respond(request: web.Request) -> web.Response:
        secret = request.headers["X-IDENTITY-HEADER"]
        return web.json_response({"statusCode": 400, "message": "bad request"}, status=400,
                                 headers={"x-ms-error-code": "BadHeader:" + percent(secret)})

    endpoint = Listener(respond=respond)
    await endpoint.start()
    capture = Capture()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)
    root.addHandler(capture)
    try:
        settings = await use_stack("reader", IDENTITY_ENDPOINT=f"http://{endpoint.host}/msi/token")
        response = await proxy(http_request("GET", "status"), invocation_context())
    finally:
        root.removeHandler(capture)
        root.setLevel(level)
        await endpoint.stop()
    assert response.status_code == 502
    secret = percent(settings["IDENTITY_HEADER"])
    logged = [line.strip()[:100] for line in "\n".join(capture.lines).splitlines() if secret in line]
    assert not logged, f"IDENTITY_HEADER, percent-encoded, in an INFO log line: {logged}"


# --- a key in TIMER_API_PATH's query: health, log lines, the timer's failure, telemetry ----------------

async def test_query_values_of_timer_api_path_are_shown_nowhere(use_stack, control, debug_everything):
    sig = "sv2024" + secrets.token_hex(16)  # e.g. a backend's own query key (SAS sig, api-key, code)
    await use_stack("reader", TIMER_API_PATH=f"/no-such-path?api-key={sig}")
    report = await health(http_request("GET", "health"), invocation_context("apim_health"))
    with pytest.raises(UpstreamError) as raised:
        await timer(timer_request(past_due=False), invocation_context("apim_timer"))
    telemetry.flush()
    exported = json.dumps(control.telemetry())
    channels = {"health body": report.get_body().decode(), "timer exception": str(raised.value),
                "log lines": "\n".join(debug_everything.lines), "telemetry": exported}
    assert "api-key=REDACTED" in exported  # the dependency span's url.full treats the value as a secret
    leaked = [name for name, text in channels.items() if sig in text]
    kinds = sorted({item["data"]["baseType"] for item in control.telemetry() if sig in json.dumps(item)})
    assert not leaked and not kinds, f"TIMER_API_PATH's query value found in: {leaked}, telemetry items {kinds}"


# --- a token that is not this call's, echoed back in a pass-through answer -----------------------------

async def test_a_token_another_call_carried_is_not_passed_back(use_stack, backoff):
    seen: list[str] = []

    def respond(request: web.Request) -> web.Response:
        # A debugging or audit endpoint of the API: what the last requests carried.
        body: dict[str, Any] = {"recent": list(seen)}
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response(body)

    upstream = Listener(respond=respond)
    await upstream.start()
    try:
        await use_stack("reader", APIM_BASE_URL=f"http://{upstream.host}/orders")
        await proxy(http_request("POST", "orders", body=b"{}", headers={"Content-Type": "application/json"}),
                    invocation_context())
        response = await proxy(http_request("GET", "audit"), invocation_context())
        writer = runtime.get_runtime().token_source("POST").token.token
    finally:
        await upstream.stop()
    assert writer not in response.get_body().decode(), "the writer identity's token came back to a GET's caller"


# --- the exporter's own log lines, and any before the first runtime exists -----------------------------

# Runs in its own process: telemetry is configured once per process, as in the worker.
CHILD = textwrap.dedent('''
    import asyncio, http.server, json, logging, sys, threading
    import azure.functions as func

    lines = []
    class Keep(logging.Handler):
        def emit(self, record):
            lines.append(logging.Formatter("%(name)s %(levelname)s %(message)s").format(record))
    logging.getLogger().addHandler(Keep())
    logging.getLogger().setLevel(logging.INFO)  # the Functions worker's level

    class Echo(http.server.BaseHTTPRequestHandler):
        """An identity endpoint and an ingestion endpoint that quote back what they were sent."""
        def log_message(self, *args): pass
        def do_GET(self):   # the identity endpoint: 400 quoting the secret header
            body = json.dumps({"statusCode": 400, "message": "bad header " + self.headers["X-IDENTITY-HEADER"]})
            self._send(400, body)
        def do_POST(self):  # ingestion: refuses each item, quoting the bearer token
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"itemsReceived": 1, "itemsAccepted": 0, "errors": [
                {"index": 0, "statusCode": 400, "message": "bad auth " + self.headers["Authorization"]}]})
            self._send(206 if MODE == "ingestion" else 400, body)
        def _send(self, status, body):
            self.send_response(status); self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body.encode())

    MODE = sys.argv[1]
    import os, pathlib
    from devstack.tls import LocalTls
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    tls = LocalTls(pathlib.Path(sys.argv[2]))   # ingestion over HTTPS, as in Azure (a bearer token needs TLS)
    tls_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    tls_server.socket = tls.server_context().wrap_socket(tls_server.socket, server_side=True)
    threading.Thread(target=tls_server.serve_forever, daemon=True).start()
    os.environ["REQUESTS_CA_BUNDLE"] = str(tls.bundle)
    os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"] = (
        "InstrumentationKey=00000000-0000-0000-0000-000000000001;IngestionEndpoint=https://127.0.0.1:%d/"
        % tls_server.server_address[1])
    os.environ["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] = (
        "ClientId=0b7c6e3a-1f2d-4a5b-9c8d-7e6f5a4b3c21;Authorization=AAD")
    if MODE.startswith("identity"):
        os.environ["IDENTITY_ENDPOINT"] = "http://127.0.0.1:%d/msi/token" % port
    from shared import handlers, telemetry
    if MODE == "ingestion":
        # A token for the exporter's credential without an identity endpoint: as if the platform gave one.
        from azure.core.credentials import AccessTokenInfo
        from azure.identity import ManagedIdentityCredential
        ManagedIdentityCredential.get_token_info = lambda self, *s, **k: AccessTokenInfo(TOKEN, 4_000_000_000)
    TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJodHRwczovL21vbml0b3IuYXp1cmUuY29tIn0.c2lnbmF0dXJlLWV4cG9ydGVyLXRva2Vu"
    request = func.HttpRequest("GET", "http://localhost/api/apim-health", body=b"", params={})
    response = asyncio.run(handlers.health(request))   # health only: no call has built a runtime yet
    if MODE in ("ingestion", "identity-after-runtime"):
        from shared import runtime
        async def build(): runtime.get_runtime()
        asyncio.run(build())  # a runtime exists, as after the first call
    logging.getLogger("shared.review").warning("an exported log record")
    telemetry.flush()
    print(json.dumps({"status": response.status_code, "lines": lines}))
''')


def run_child(mode: str, identity_header: str, tls_dir: str) -> dict[str, Any]:
    env = {**os.environ, **OFFLINE_EXPORTER_SETTINGS, "IDENTITY_HEADER": identity_header,
           "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true", "OTEL_TRACES_SAMPLER": "always_on"}
    for name in ("APIM_BASE_URL", "IDENTITY_ENDPOINT", "REQUESTS_CA_BUNDLE",
                 "PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"):
        env.pop(name, None)
    if mode in ("ingestion", "identity-after-runtime"):
        env.update(APIM_BASE_URL="https://contoso.azure-api.net/orders", API_APP_ID_URI="api://contoso-orders",
                   IDENTITY_ENDPOINT="http://127.0.0.1:9/msi/token", APIM_SUBSCRIPTION_KEY=secrets.token_hex(16))
    done = subprocess.run([sys.executable, "-c", CHILD, mode, tls_dir], env=env, capture_output=True, text=True,
                          timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_identity_header_echoed_to_the_exporters_credential_is_not_logged_before_any_runtime(tmp_path):
    # Misconfigured (no APIM_BASE_URL) or health-only: the exporter's own ManagedIdentityCredential asks for
    # its token before any call has built a runtime.
    identity_header = "ih-" + secrets.token_urlsafe(24)
    result = run_child("identity", identity_header, str(tmp_path))
    assert result["status"] == 503
    leaked = [line[:160] for line in result["lines"] if identity_header in line]
    assert not leaked, f"IDENTITY_HEADER in log lines: {leaked}"


def test_an_ingestion_answer_quoting_the_exporters_token_is_not_logged(tmp_path):
    result = run_child("ingestion", "ih-" + secrets.token_urlsafe(24), str(tmp_path))
    leaked = [line[:200] for line in result["lines"] if "c2lnbmF0dXJlLWV4cG9ydGVyLXRva2Vu" in line]
    assert not leaked, f"the exporter's bearer token in log lines: {leaked}"


def test_identity_header_echoed_to_the_exporters_credential_is_not_logged_by_the_exporter_either(tmp_path):
    # A configured app that has made its runtime: the exporter's own logger re-logs azure-identity's
    # exception text.
    identity_header = "ih-" + secrets.token_urlsafe(24)
    result = run_child("identity-after-runtime", identity_header, str(tmp_path))
    leaked = [line[:200] for line in result["lines"] if identity_header in line]
    assert not leaked, f"IDENTITY_HEADER in log lines: {leaked}"



async def test_the_token_refused_before_a_renewal_is_not_passed_back_on_the_resend(use_stack, control, backoff):
    seen: list[str] = []
    mode = {"refuse_once": False}

    def respond(request: web.Request) -> web.Response:
        body: dict[str, Any] = {"recent": list(seen)}
        seen.append(request.headers.get("Authorization", ""))
        if mode["refuse_once"]:
            mode["refuse_once"] = False
            return web.json_response({"statusCode": 401, "message": "Invalid JWT."}, status=401)
        return web.json_response(body)

    upstream = Listener(respond=respond)
    await upstream.start()
    try:
        await use_stack("reader", APIM_BASE_URL=f"http://{upstream.host}/orders")
        await proxy(http_request("GET", "warm-up"), invocation_context())
        first = runtime.get_runtime().token_source("GET").token.token
        control.roll_over_tokens()  # the platform's next token is a new one
        seen.clear()
        mode["refuse_once"] = True
        response = await proxy(http_request("GET", "audit"), invocation_context())
        second = runtime.get_runtime().token_source("GET").token.token
    finally:
        await upstream.stop()
    assert response.status_code == 200 and first != second  # renewed and resent
    assert first not in response.get_body().decode(), "the token refused a moment ago came back to the caller"


# --- pass-through answers: the token in its parts ------------------------------------------------------

def echo_in_parts(request: web.Request) -> web.Response:
    token = request.headers["Authorization"].removeprefix("Bearer ")
    signed, _, signature = token.rpartition(".")
    return web.json_response({"jwt": {"signed_part": signed, "signature": signature}})  # a JWT debug view


async def test_a_token_echoed_in_its_parts_cannot_be_read_back(use_stack, backoff):
    upstream = Listener(respond=echo_in_parts)
    await upstream.start()
    try:
        await use_stack("reader", APIM_BASE_URL=f"http://{upstream.host}/orders")
        response = await proxy(http_request("GET", "whoami"), invocation_context())
        token = runtime.get_runtime().token_source("GET").token.token
    finally:
        await upstream.stop()
    parts = json.loads(response.get_body())["jwt"]
    assert parts["signature"] == "[redacted]" and f"{parts['signed_part']}.{parts['signature']}" != token
