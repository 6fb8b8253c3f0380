"""Secrets: a full run at DEBUG for every logger, with all telemetry captured.

No access token (not even its signature), the subscription key or IDENTITY_HEADER
may appear in a log line, a response, a telemetry envelope or an exception; and a
token only ever travels over HTTPS or to loopback.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import traceback
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import pytest
from aiohttp import web
from azure.core.credentials import AccessTokenInfo
from azure.core.exceptions import ServiceRequestError
from azure.core.pipeline import AsyncPipeline
from azure.core.pipeline.transport import AsyncHttpTransport
from azure.core.rest import HttpRequest

from devstack import DevStack
from devstack.invocation import timer_request
from shared import runtime, telemetry
from shared.apim import ApimAuthorizationPolicy
from shared.errors import ConfigurationError, TokenError, UpstreamError
from shared.tokens import TokenSource
from tests.plugin import FUNCTIONS, http_request, invocation_context
from tests.reliability.conftest import Listener, closed_port

proxy, health, timer = FUNCTIONS["apim_proxy"], FUNCTIONS["apim_health"], FUNCTIONS["apim_timer"]
ORDER = json.dumps({"item": "widget", "quantity": 2}).encode()
JSON = {"Content-Type": "application/json"}
@pytest.fixture
def issued_tokens(devstack: DevStack, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every token the identity stand-in signs, including those later replaced."""
    tokens: list[str] = []
    issuer = devstack.state.issuer
    sign = issuer.sign

    def recording_sign(claims: dict[str, Any]) -> str:
        token = sign(claims)
        tokens.append(token)
        return token

    monkeypatch.setattr(issuer, "sign", recording_sign)
    return tokens


FRAGMENT = 16  # characters of a secret that count as a leak (a truncated token is still a leak)


def leaked_fragments(text: str, secrets: list[str]) -> list[str]:
    """Secrets of which any FRAGMENT-long piece occurs in `text`, shortened for the report."""
    windows = {secret[i:i + FRAGMENT]: secret for secret in secrets for i in range(len(secret) - FRAGMENT + 1)}
    found = set()
    for run in re.findall(rf"[A-Za-z0-9_\-]{{{FRAGMENT},}}", text):  # secrets are base64url or hex
        pieces = (run[i:i + FRAGMENT] for i in range(len(run) - FRAGMENT + 1))
        found |= {windows[piece] for piece in pieces if piece in windows}
    return sorted(secret[:8] + "…" for secret in found)


def exception_text(exc: BaseException) -> str:
    """The exception as the worker reports it, plus everything chained to it (shown or not)."""
    text = "".join(traceback.format_exception(exc))
    while exc.__context__ is not None or exc.__cause__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        text += "\n" + repr(exc) + "\n" + "".join(traceback.format_exception(exc))
    return text


async def test_no_secret_anywhere_in_a_full_debug_run(use_stack, control, backoff, debug_everything, issued_tokens):
    captured: list[str] = []

    async def call(method: str, path: str, **kwargs: Any) -> None:
        response = await proxy(http_request(method, path, **kwargs), invocation_context())
        captured.append(f"{response.status_code} {json.dumps(dict(response.headers))} {response.get_body()!r}")

    async def run_timer() -> None:
        try:
            await timer(timer_request(past_due=True), invocation_context("apim_timer"))
        except Exception as exc:
            captured.append(exception_text(exc))

    settings = await use_stack("reader")
    await call("GET", "orders")
    await call("GET", "orders/1001", query="code=function-key&top=1")
    await call("POST", "orders", body=ORDER, headers=JSON)
    await call("POST", "orders", body=b"not json", headers={"Content-Type": "text/plain"})
    response = await health(http_request("GET", "health", query="probe=token"), invocation_context("apim_health"))
    captured.append(response.get_body().decode())
    await run_timer()
    for fault in ({"service": "apim", "status": 401, "times": 1}, {"service": "apim", "status": 401, "times": 2},
                  {"service": "identity", "status": 503, "times": 1}, {"service": "apim", "status": 503, "times": 9},
                  {"service": "apim", "drop_connection": True, "times": 9}):
        control.roll_over_tokens()  # so that a renewal gets a new token, as after a platform refresh
        control.fault(**fault)
        await call("GET", "status")
        await run_timer()
        control.clear_faults()
    for fault in ({"service": "identity", "status": 200, "malformed_body": True},
                  {"service": "identity", "status": 500, "times": 9}):
        await runtime.reset_runtime()  # no cached token: the identity endpoint is asked
        control.fault(**fault)
        await call("GET", "status")
        control.clear_faults()
    await use_stack("unassigned")
    await call("GET", "status")
    await use_stack("reader", APIM_SUBSCRIPTION_KEY="f" * 32)
    await call("GET", "status")
    await use_stack("reader", IDENTITY_ENDPOINT=f"http://127.0.0.1:{closed_port()}/msi/token")
    await call("GET", "status")
    await run_timer()
    telemetry.flush()

    everything = "\n".join([*debug_everything.lines, *captured, json.dumps(control.telemetry())])
    # A token is a credential through its signature (header and claims are readable by design).
    secrets = [token.rsplit(".", 1)[1] for token in issued_tokens]
    secrets += [settings["APIM_SUBSCRIPTION_KEY"], settings["IDENTITY_HEADER"], "f" * 32]
    assert len(issued_tokens) >= 4  # a renewal included (one per identity and interval): the run did exercise it
    leaked = leaked_fragments(everything, secrets)
    assert not leaked, f"secrets found in logs, responses, exceptions or telemetry: {leaked}"
    # The capture really was at DEBUG, and the headers that carry secrets were logged, redacted.
    for prefix in ("azure.identity", "azure.core", "shared", "devstack"):
        assert any(name.startswith(prefix) for name in debug_everything.names), prefix
    assert any("'Authorization': 'REDACTED'" in line for line in debug_everything.lines)
    assert any("'X-IDENTITY-HEADER': 'REDACTED'" in line for line in debug_everything.lines)
    assert any("'Ocp-Apim-Subscription-Key': 'REDACTED'" in line for line in debug_everything.lines)
    assert any(e["data"]["baseType"] == "RemoteDependencyData" for e in control.telemetry())


def echo_what_was_sent(status: int) -> Callable[[web.Request], web.Response]:
    """An upstream whose error message quotes the request's secrets back, as a debugging backend might."""

    def respond(request: web.Request) -> web.Response:
        message = (f"Invalid subscription key {request.headers.get('Ocp-Apim-Subscription-Key')} for "
                   f"{request.headers.get('Authorization')}; tenant 72f988bf-86f1-41af-91ab-2d7cd011db47")
        return web.json_response({"statusCode": status, "message": message}, status=status)

    return respond


@pytest.mark.parametrize("status", [401, 403, 415, 429, 500])
async def test_an_upstream_message_that_echoes_secrets_is_scrubbed(use_stack, control, backoff, debug_everything,
                                                                   issued_tokens, status):
    upstream = Listener(respond=echo_what_was_sent(status))
    await upstream.start()
    try:
        key = secrets.token_hex(16)
        settings = await use_stack("reader", APIM_BASE_URL=f"http://{upstream.host}/orders",
                                   APIM_SUBSCRIPTION_KEY=key, TIMER_API_PATH="/status")
        response = await proxy(http_request("GET", "status"), invocation_context())
        with pytest.raises(UpstreamError) as raised:
            await timer(timer_request(past_due=False), invocation_context("apim_timer"))
    finally:
        await upstream.stop()
    telemetry.flush()

    message = json.loads(response.get_body())["error"]["message"]
    assert "Invalid subscription key [redacted] for Bearer [redacted]" in message  # the rest is passed on
    assert "72f988bf-86f1-41af-91ab-2d7cd011db47" in message  # IDs are not secrets
    everything = "\n".join([*debug_everything.lines, response.get_body().decode(), exception_text(raised.value),
                            json.dumps(control.telemetry())])
    assert upstream.seen and issued_tokens
    leaked = leaked_fragments(everything, [key, settings["IDENTITY_HEADER"],
                                           *(token.rsplit(".", 1)[1] for token in issued_tokens)])
    assert not leaked, f"secrets found in logs, responses, exceptions or telemetry: {leaked}"


def echo_encoded(shape: str, sent: dict[str, str]) -> Callable[[web.Request], web.Response]:
    """An API that sends our secrets back in another form than the one they were sent in."""

    def respond(request: web.Request) -> web.Response:
        authorization, key = request.headers["Authorization"], request.headers["Ocp-Apim-Subscription-Key"]
        token = sent["token"] = authorization.removeprefix("Bearer ")
        if shape == "utf-16":
            return web.Response(body=json.dumps({"auth": token, "key": key}).encode("utf-16"),
                                content_type="application/json", charset="utf-16")
        if shape == "base64":
            return web.json_response({"std": base64.b64encode(authorization.encode()).decode(),
                                      "url": base64.urlsafe_b64encode(f"k={key}&t={token}".encode()).decode()})
        if shape == "percent":
            location = "/x?t=" + "".join(f"%{byte:02X}" for byte in token.encode())
            return web.json_response({"ok": True}, status=201, headers={"Location": location})
        return web.json_response({"key": key.upper(), "token": "".join(f"%{b:02x}" for b in token.encode())})

    return respond


@pytest.mark.parametrize("shape", ["utf-16", "base64", "percent", "case"])
async def test_secrets_echoed_in_another_encoding_are_redacted(use_stack, backoff, shape):
    sent: dict[str, str] = {}
    upstream = Listener(respond=echo_encoded(shape, sent))
    await upstream.start()
    try:
        key = secrets.token_hex(16)
        await use_stack("reader", APIM_BASE_URL=f"http://{upstream.host}/orders", APIM_SUBSCRIPTION_KEY=key)
        response = await proxy(http_request("GET", "status"), invocation_context())
    finally:
        await upstream.stop()
    body = response.get_body()
    text = body.decode("utf-16") if shape == "utf-16" else body.decode()
    assert "[redacted]" in text or "[redacted]" in response.headers.get("Location", ""), text
    forms = [key, key.upper(), sent["token"].rsplit(".", 1)[1]]
    if shape == "base64":  # what is left must not decode to a secret either
        decoded = [base64.b64decode(part + "===", altchars=alt) for part in re.findall(r"[\w+/=-]{16,}", text)
                   for alt in (b"+/", b"-_")]
        assert not any(form.encode() in blob for form in forms for blob in decoded)
    shown = text + json.dumps(dict(response.headers))
    assert not any(form in unquote(shown) or form in shown for form in forms), shown


FAKE_TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJhcGk6Ly94In0.c2lnbmF0dXJlLW9mLWEtdG9rZW4tbm90LXRvLWJlLWxvZ2dlZA"


def identity_answer(status: int, shape: str) -> Callable[[web.Request], web.Response]:
    """A managed-identity endpoint gone wrong: it quotes its secret header back, or mangles a token."""

    def respond(request: web.Request) -> web.Response:
        secret = request.headers.get("X-IDENTITY-HEADER", "")
        if shape == "echo":
            return web.json_response({"error": "invalid_request", "error_description": f"bad header {secret}"},
                                     status=status)
        if shape == "text":
            return web.Response(text=f"token={FAKE_TOKEN} for {secret}", status=status)
        return web.json_response({"token": FAKE_TOKEN, "expires_in": FAKE_TOKEN}, status=status)

    return respond


@pytest.mark.parametrize(("status", "shape"), [(400, "echo"), (500, "echo"), (200, "text"), (200, "misnamed")])
async def test_an_identity_endpoint_that_echoes_secrets_leaks_nothing(use_stack, backoff, debug_everything,
                                                                      status, shape):
    endpoint = Listener(respond=identity_answer(status, shape))
    await endpoint.start()
    try:
        settings = await use_stack("reader", IDENTITY_ENDPOINT=f"http://{endpoint.host}/msi/token",
                                   TIMER_API_PATH="/status")
        response = await proxy(http_request("GET", "status"), invocation_context())
        with pytest.raises(TokenError) as raised:
            await timer(timer_request(past_due=False), invocation_context("apim_timer"))
    finally:
        await endpoint.stop()

    assert endpoint.seen and response.status_code == 502
    everything = "\n".join([*debug_everything.lines, response.get_body().decode(), exception_text(raised.value)])
    assert any(name.startswith("azure.identity") for name in debug_everything.names)  # it did log the failure
    leaked = leaked_fragments(everything, [settings["IDENTITY_HEADER"], FAKE_TOKEN.rsplit(".", 1)[1]])
    assert not leaked, f"secrets found in logs, responses or exceptions: {leaked}"


# --- tokens travel over HTTPS or to loopback only ------------------------------------------------

class CountingCredential:
    def __init__(self) -> None:
        self.calls = 0

    async def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        self.calls += 1
        return AccessTokenInfo("secret-token", 4_000_000_000)

    async def close(self) -> None:
        pass


class RecordingTransport(AsyncHttpTransport):
    """Records the Authorization header of what would be sent, and sends nothing."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, str | None]] = []

    async def send(self, request: Any, **kwargs: Any) -> Any:
        self.sent.append((request.url, request.headers.get("Authorization")))
        raise ServiceRequestError("not sent: recording only")

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def __aexit__(self, *args: Any) -> None:
        pass


def recording_pipeline() -> tuple[AsyncPipeline, CountingCredential, RecordingTransport]:
    """ApimAuthorizationPolicy alone over a transport that records what it would send."""
    credential, transport = CountingCredential(), RecordingTransport()
    source = TokenSource(credential, "api://x/.default", client_id=None)  # type: ignore[arg-type]
    return AsyncPipeline(transport, [ApimAuthorizationPolicy(source)]), credential, transport


@pytest.mark.parametrize("url", [
    "http://apim.contoso.example/orders/status", "HTTP://APIM.CONTOSO.EXAMPLE/orders", "http://10.0.0.4/orders",
    "http://localhost.contoso.example/orders", "http://127.0.0.1.nip.io/orders",
    "http://localhost@apim.contoso.example/orders", "ftp://apim.contoso.example/orders",
])
async def test_no_token_is_sent_over_plain_http_to_another_host(url):
    pipeline, credential, transport = recording_pipeline()
    with pytest.raises(ConfigurationError, match="plain HTTP"):
        await pipeline.run(HttpRequest("GET", url))
    assert transport.sent == [] and credential.calls == 0  # refused before a token was even fetched


@pytest.mark.parametrize("url", [
    "https://apim.contoso.example/orders", "HTTPS://apim.contoso.example/orders", "http://127.0.0.1:8080/orders",
    "http://localhost:8080/orders", "http://[::1]:8080/orders", "http://127.0.0.2:8080/orders",
])
async def test_tokens_go_over_https_or_to_loopback(url):
    pipeline, _, transport = recording_pipeline()
    with pytest.raises(ServiceRequestError):
        await pipeline.run(HttpRequest("GET", url))
    assert transport.sent == [(url, "Bearer secret-token")]


async def test_an_http_base_url_to_another_host_is_refused_before_any_token(use_stack, control):
    await use_stack("reader", APIM_BASE_URL="http://apim.contoso.example/orders")
    response = await health(http_request("GET", "health"), invocation_context("apim_health"))
    assert response.status_code == 503
    assert any("APIM_BASE_URL must use https" in p for p in json.loads(response.get_body())["error"]["problems"])
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert response.status_code == 500
    assert control.stats().get("identity", {}).get("token_requests", 0) == 0

