"""Odd answers from the identity endpoint and from APIM, and odd uses of `api()`: each one a typed, named outcome."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest
from aiohttp import web

from shared import api
from shared.errors import ConfigurationError
from tests.plugin import FUNCTIONS, SAMPLE_BACKEND, http_request, invocation_context, timer_request
from tests.reliability.conftest import error_of

proxy, health, timer = FUNCTIONS["apim_proxy"], FUNCTIONS["apim_health"], FUNCTIONS["apim_timer"]


def backend_queries(control) -> list[dict[str, str]]:
    return [r["query"] for r in control.backend_requests() if r["path"].startswith(SAMPLE_BACKEND)]


# --- a query field named `code` is the API's own, but for the proxy's (the host's function key) ----------

async def test_api_call_forwards_a_query_parameter_named_code(use_stack, control, backoff):
    await use_stack("reader")
    response = await api().call("GET", "/orders?code=ABC-42&top=1")
    assert response.status == 200
    assert backend_queries(control) == [{"code": "ABC-42", "top": "1"}]


async def test_timer_forwards_a_query_parameter_named_code(use_stack, control, backoff):
    await use_stack("reader", TIMER_API_PATH="/orders?code=ABC-42")
    await timer(timer_request(), invocation_context("apim_timer"))
    assert backend_queries(control) == [{"code": "ABC-42"}]


# --- a fake identity endpoint in front of the stand-in's ---------------------------------------------

class IdentityFront:
    """Speaks the App Service protocol on loopback: passes requests to the stand-in, and lets a test rewrite
    the answer (`rewrite(status, headers, body) -> (status, headers, body)`) or replace it (`answer`)."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.requests = 0
        self.rewrite: Callable[[int, dict[str, str], bytes], tuple[int, dict[str, str], bytes]] | None = None
        self.answer: Callable[[], web.StreamResponse] | None = None
        self.gate: asyncio.Event | None = None  # when set, every request waits for it
        self.arrived = asyncio.Event()  # a request has reached the front (and waits at the gate, if any)
        self.params: dict[str, str] = {}  # replaces query parameters of what is passed on (resource, say)
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        self.arrived.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.answer is not None:
            return self.answer()
        secret = {k: v for k, v in request.headers.items() if k.lower().startswith("x-identity")}
        async with aiohttp.ClientSession() as session, session.get(
                self.upstream, params={**request.query, **self.params}, headers=secret) as got:
            status, body = got.status, await got.read()
            headers = {"Content-Type": got.headers.get("Content-Type", "application/json")}
        if self.rewrite is not None:
            status, headers, body = self.rewrite(status, headers, body)
        return web.Response(status=status, headers=headers, body=body)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}/msi/token"


@pytest.fixture
async def identity_front(use_stack, endpoints) -> AsyncIterator[IdentityFront]:
    front = IdentityFront(endpoints["identity_endpoint"])
    await front.start()
    await use_stack("reader", IDENTITY_ENDPOINT=front.url)
    yield front
    assert front.runner is not None
    await front.runner.cleanup()


def with_expires_on(value: Any) -> Callable[[int, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]:
    def rewrite(status: int, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
        data = json.loads(body)
        if value is None:
            data.pop("expires_on")
        else:
            data["expires_on"] = value(int(data["expires_on"])) if callable(value) else value
        return status, headers, json.dumps(data).encode()
    return rewrite


# --- the identity endpoint's answer that is not JSON is named for what it is --------------------------

@pytest.mark.parametrize("status", [200, 500, 503])
async def test_a_non_json_answer_from_the_identity_endpoint_is_not_blamed_on_the_assignment(
        identity_front, control, backoff, status):
    identity_front.answer = lambda: web.Response(status=status, text="<html>Service Unavailable</html>",
                                                 content_type="text/html")
    error = error_of(await proxy(http_request("GET", "orders"), invocation_context()), 502, "token_error")
    assert "not available here" not in error["message"], error
    expected = "not a token response" if status == 200 else f"HTTP {status}"
    assert expected in error["message"], error


# --- an expires_on azure-identity cannot read: not a token response --------------------------------

@pytest.mark.parametrize("expires_on", ["2026-12-01T19:00:00Z", "1764615600.5", "soon"])
async def test_an_unreadable_expires_on_is_a_token_response_error(identity_front, control, backoff, expires_on):
    identity_front.rewrite = with_expires_on(expires_on)
    error = error_of(await proxy(http_request("GET", "orders"), invocation_context()), 502, "token_error")
    assert "not a token response" in error["message"], error


# --- a token expired on arrival: a token error that says so, one request per call, never a retry loop ----

async def test_a_token_expired_on_arrival_is_a_token_error_that_names_the_expiry(identity_front, control, backoff):
    identity_front.rewrite = with_expires_on(lambda _: int(time.time()) - 60)
    for _ in range(3):
        error = error_of(await proxy(http_request("GET", "orders"), invocation_context()), 502, "token_error")
        assert "expired at" in error["message"] and "clock" in error["hint"], error
    assert identity_front.requests == 3  # one each: sending it to APIM would only add a 401 and a renewal


# --- an invocation cancelled while the shared token fetch is in flight -------------------------------

async def test_a_cancelled_invocation_does_not_poison_the_shared_fetch(identity_front, control, backoff):
    gate = identity_front.gate = asyncio.Event()
    calls = [asyncio.create_task(proxy(http_request("GET", "orders"), invocation_context())) for _ in range(5)]
    await asyncio.wait_for(identity_front.arrived.wait(), 10)  # the shared fetch is in flight, all five on it
    calls[0].cancel()
    gate.set()
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert [r.status_code for r in results[1:]] == [200] * 4
    assert identity_front.requests == 1


# --- api() from a synchronous function (asyncio.run per invocation): a configuration error that says so ---

def test_api_call_from_two_asyncio_runs(endpoints, monkeypatch):
    from devstack.appsettings import app_settings
    from shared import runtime
    from tests.plugin import SETTING_NAMES
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    for name, value in app_settings(endpoints, "reader").items():
        monkeypatch.setenv(name, value)
    asyncio.run(runtime.reset_runtime())
    try:
        first = asyncio.run(api().call("GET", "/status"))
        with pytest.raises(ConfigurationError, match="event loop of its first call, and that loop is closed"):
            asyncio.run(api().call("GET", "/status"))  # its session and connections went with the first loop
        assert first.status == 200
    finally:
        runtime._runtimes.clear()
        runtime._settings.clear()


# --- raw upstream answers -------------------------------------------------------------------------

class RawAPIM:
    """Answers request N with `answers[N]` (raw bytes; the last one repeats), keeping the connection open."""

    def __init__(self, answers: list[bytes]) -> None:
        self.answers = answers
        self.requests: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = b""
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    head += line
                if not head:
                    return
                length = next((int(v) for k, _, v in (h.partition(b":") for h in head.split(b"\r\n"))
                               if k.strip().lower() == b"content-length"), 0)
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + b"\r\n" + body)
                writer.write(self.answers[min(len(self.requests), len(self.answers)) - 1])
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]


@pytest.fixture
async def raw_apim(use_stack, backoff) -> AsyncIterator[Callable[[list[bytes]], Any]]:
    servers: list[RawAPIM] = []

    async def start(answers: list[bytes]) -> RawAPIM:
        server = RawAPIM(answers)
        await server.start()
        servers.append(server)
        await use_stack("reader", APIM_BASE_URL=f"http://127.0.0.1:{server.port}/orders")
        return server

    yield start
    for server in servers:
        assert server.server is not None
        server.server.close()


async def test_every_cache_control_line_reaches_the_caller(raw_apim):
    await raw_apim([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: max-age=60\r\n"
                    b"Cache-Control: no-store\r\nContent-Length: 2\r\n\r\n{}"])
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert response.status_code == 200
    assert response.headers.get("Cache-Control") in ("max-age=60, no-store", "max-age=60,no-store"), \
        dict(response.headers)


# --- a short (legal) subscription key is not looked for in answers: it would rewrite the API's words ----

async def test_a_short_subscription_key_does_not_rewrite_the_apis_answers(raw_apim, use_stack):
    body = b'{"orders": [{"id": 1, "status": "shipped"}]}'
    server = await raw_apim([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body])
    await use_stack("reader", APIM_BASE_URL=f"http://127.0.0.1:{server.port}/orders", APIM_SUBSCRIPTION_KEY="orders")
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert response.status_code == 200
    assert response.get_body() == body


# --- a status outside HTTP's range is a typed bad gateway, never the function's own status ----------

@pytest.mark.parametrize("status", [b"099", b"600", b"700", b"999"])
async def test_a_status_outside_http_range_is_a_typed_bad_gateway_sent_once(raw_apim, status):
    server = await raw_apim([b"HTTP/1.1 " + status + b" Odd\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 2\r\n\r\n{}"])
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert "not an HTTP status" in error_of(response, 502, "upstream_error")["message"]
    assert len(server.requests) == 1  # azure-core's list of statuses to retry runs to 998


# --- an answer with a header over aiohttp's default 8 KiB is read --------------------------------------

async def test_an_answer_with_a_large_header_is_read_or_named_not_retried_as_a_broken_connection(raw_apim):
    link = b"Link: " + b", ".join(b"<https://contoso.azure-api.net/orders?page=%d>; rel=\"item\"" % n
                                  for n in range(160))
    assert 8190 < len(link) < 16384
    server = await raw_apim([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + link +
                             b"\r\nContent-Length: 2\r\n\r\n{}"])
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert (response.status_code, len(server.requests)) == (200, 1), (response.get_body(), len(server.requests))


# --- the query: each value arrives as sent, its percent-encoding normalised by aiohttp (README) ----------

@pytest.mark.parametrize(("query", "normalised"), [
    ("sig=ab%2Fcd%2Bef%3D", "sig=ab/cd%2Bef%3D"), ("q=%7euser", "q=~user"), ("name=%41lice", "name=Alice"),
    ("euro=%e2%82%ac", "euro=%E2%82%AC")])
async def test_the_query_reaches_the_api_with_the_same_values(raw_apim, query, normalised):
    server = await raw_apim([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"])
    response = await proxy(http_request("GET", "items", query=query), invocation_context())
    assert response.status_code == 200
    sent = server.requests[0].split(b"\r\n")[0].decode()
    assert sent == f"GET /orders/items?{normalised} HTTP/1.1"
    assert parse_qsl(sent.split("?", 1)[1].split(" ")[0]) == parse_qsl(query)  # the same values, decoded


# --- a trailing slash is kept: to many APIs `items/` is not `items` ------------------------------------

async def test_api_call_keeps_a_trailing_slash(raw_apim):
    server = await raw_apim([b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"])
    response = await api().call("GET", "/items/")
    assert response.status == 200
    assert server.requests[0].split(b"\r\n")[0] == b"GET /orders/items/ HTTP/1.1"


# --- an answer that is not valid HTTP (a 204 with a body): named so, not retried -----------------------

async def test_a_204_with_a_stray_body_is_not_retried_as_a_broken_connection(raw_apim):
    server = await raw_apim([b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"])
    response = await proxy(http_request("DELETE", "items/1"), invocation_context())
    assert len(server.requests) == 1, (len(server.requests), response.get_body())
    assert b"not valid HTTP" in response.get_body() and b"connection" not in response.get_body().lower()


# --- an expires_on past what a float holds: a token error for every call and the probe, never a 500 ------

async def test_an_enormous_expires_on_is_a_token_error_not_an_internal_error(identity_front, control, backoff):
    identity_front.rewrite = with_expires_on(10 ** 400)
    first = await proxy(http_request("GET", "orders"), invocation_context())
    second = await proxy(http_request("GET", "orders"), invocation_context())
    probe = await health(http_request("GET", "", query="probe=token"), invocation_context("apim_health"))
    for answer in (first, second, probe):
        assert "not a token response" in error_of(answer, 502, "token_error")["message"]


# --- the identity endpoint hands out a token for another audience: the hint says so ---------------------

async def test_a_token_for_another_audience_is_not_blamed_on_a_correct_api_app_id_uri(identity_front, control,
                                                                                      backoff):
    identity_front.params = {"resource": "api://contoso-inventory"}  # the app asks for api://contoso-orders
    error = error_of(await proxy(http_request("GET", "orders"), invocation_context()), 401, "access_denied")
    assert "fix API_APP_ID_URI" not in error["hint"] and "'api://contoso-inventory'" in error["hint"], error["hint"]
