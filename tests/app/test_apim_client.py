"""ApimClient against a scripted local server: retry rules, 401 renewal, typed errors, headers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import jwt
import pytest
from aiohttp import web
from azure.core.credentials import AccessTokenInfo

from shared.apim import ApimClient, Timeouts, retry_after_seconds
from shared.errors import (
    AccessDenied,
    BadRequest,
    Throttled,
    UnsupportedMediaType,
    UpstreamError,
    UpstreamTimeout,
)
from shared.settings import Settings
from shared.tokens import TokenSource

READER, WRITER = "0b7c6e3a-1f2d-4a5b-9c8d-7e6f5a4b3c21", "1c8d7f4b-2e3f-4b6c-8d9e-8f7a6b5c4d32"


@dataclass
class Script:
    """Responses to give, in order; every request received is recorded."""

    responses: list[web.StreamResponse | float | Callable[[web.Request], Awaitable[web.StreamResponse]]] = field(
        default_factory=list)
    seen: list[dict] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({"method": request.method, "path": request.path_qs, "headers": dict(request.headers),
                          "body": await request.read()})
        step = self.responses.pop(0) if self.responses else web.json_response({"ok": True})
        if isinstance(step, float):  # a delay, then OK
            await asyncio.sleep(step)
            return web.json_response({"ok": True})
        if callable(step):
            return await step(request)
        return step


class StaticCredential:
    """`name-token-N`, or with `same` the first token again (as Azure's platform cache hands it back)."""

    def __init__(self, name: str) -> None:
        self.name, self.calls, self.same = name, 0, False

    async def get_token_info(self, *scopes, options=None):
        self.calls += 1
        return AccessTokenInfo(f"{self.name}-token-{1 if self.same else self.calls}", 4_000_000_000)

    async def close(self):
        pass


@pytest.fixture
async def server() -> AsyncIterator[tuple[Script, str]]:
    script = Script()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", script.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    yield script, f"http://127.0.0.1:{port}/orders"
    await runner.cleanup()


KEY = "k3y-0123456789abcdef0123456789ab"  # 32 characters, as APIM makes them


@pytest.fixture
async def client(server) -> AsyncIterator[ApimClient]:
    _, base = server
    settings = Settings(apim_base_url=base, api_app_id_uri="api://contoso-orders", subscription_key=KEY,
                        client_id=READER, write_client_id=WRITER)
    sources = {cid: TokenSource(StaticCredential(name), settings.scope, client_id=cid)
               for cid, name in ((READER, "reader"), (WRITER, "writer"))}
    client = ApimClient(settings, sources, timeouts=Timeouts(read=0.5, total=5, max_retry_after=2))
    yield client
    await client.close()


def credential_of(client: ApimClient, method: str = "GET") -> StaticCredential:
    credential = client.source_for(method).credential
    assert isinstance(credential, StaticCredential)
    return credential


def status(code: int, retry_after: str | None = None, message: str = "nope") -> web.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return web.json_response({"statusCode": code, "message": message}, status=code, headers=headers)


async def test_sends_token_key_and_uses_the_writer_for_writes(server, client):
    script, _ = server
    await client.call("GET", "status")
    await client.call("POST", "orders", body=b'{"item": "x"}', content_type="application/json")
    get, post = script.seen
    assert get["headers"]["Authorization"] == "Bearer reader-token-1"
    assert post["headers"]["Authorization"] == "Bearer writer-token-1"
    assert get["headers"]["Ocp-Apim-Subscription-Key"] == KEY
    assert post["headers"]["Content-Type"] == "application/json"
    assert post["body"] == b'{"item": "x"}'
    assert get["path"] == "/orders/status"
    assert get["headers"]["User-Agent"].startswith("functions-apim-managed-identity/")  # named in APIM's logs


HTTP_LOG = "azure.core.pipeline.policies.http_logging_policy"


async def test_requests_are_logged_only_at_debug_and_with_the_secrets_redacted(server, client, caplog):
    script, _ = server
    with caplog.at_level(logging.INFO, logger=HTTP_LOG):
        await client.call("GET", "status", query="code=s3cret")
    assert not [r for r in caplog.records if r.name == HTTP_LOG]  # INFO, as the worker sets it: not a line
    with caplog.at_level(logging.DEBUG, logger=HTTP_LOG):  # switched on while the app runs: the next call logs
        await client.call("GET", "status", query="code=s3cret")
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name == HTTP_LOG)
    assert "Request URL" in logged and "Response status: 200" in logged
    assert "Authorization" in logged and "reader-token" not in logged  # azure-core redacts the headers' values
    assert KEY not in logged and "s3cret" not in logged
    assert len(script.seen) == 2


async def test_get_is_retried_on_503_and_succeeds(server, client):
    script, _ = server
    script.responses = [status(503, "0"), status(503, "0")]
    response = await client.call("GET", "status")
    assert response.status == 200
    assert len(script.seen) == 3


@pytest.mark.parametrize("code", [500, 502, 503, 504])
async def test_post_is_never_repeated_after_a_server_error(server, client, code):
    script, _ = server
    script.responses = [status(code, "0")]
    with pytest.raises(UpstreamError) as caught:
        await client.call("POST", "orders", body=b"{}", content_type="application/json")
    assert caught.value.status == code
    assert len(script.seen) == 1


async def test_post_is_retried_after_429_with_retry_after(server, client):
    script, _ = server
    script.responses = [status(429, "0")]
    response = await client.call("POST", "orders", body=b"{}", content_type="application/json")
    assert response.status == 200
    assert len(script.seen) == 2


async def test_a_retry_after_longer_than_the_limit_is_not_slept_through(server, client):
    script, _ = server
    script.responses = [status(429, "120")]
    with pytest.raises(Throttled) as caught:
        await client.call("GET", "status")
    assert len(script.seen) == 1
    assert caught.value.headers["Retry-After"] == "120"


async def test_401_gets_one_fresh_token_and_one_resend(server, client):
    script, _ = server
    script.responses = [status(401, message="Unauthorized. Access token is missing or invalid.")]
    response = await client.call("GET", "status")
    assert response.status == 200
    assert [s["headers"]["Authorization"] for s in script.seen] == ["Bearer reader-token-1", "Bearer reader-token-2"]


async def test_persistent_401_becomes_access_denied_with_a_hint(server, client):
    script, _ = server
    script.responses = [status(401), status(401)]
    with pytest.raises(AccessDenied) as caught:
        await client.call("GET", "status")
    assert caught.value.status == 401 and caught.value.hint
    assert len(script.seen) == 2


async def test_403_and_415_are_typed_with_hints(server, client):
    script, _ = server
    script.responses = [status(403), status(415)]
    with pytest.raises(AccessDenied) as denied:
        await client.call("GET", "status")
    assert "lacks the app role" in denied.value.hint  # the fake token has no claims: a generic hint
    with pytest.raises(UnsupportedMediaType) as media:
        await client.call("POST", "orders", body=b"x", content_type="text/plain")
    assert "text/plain" in media.value.hint


async def test_api_errors_other_than_refusals_pass_through(server, client):
    script, _ = server
    script.responses = [web.json_response({"error": "no such order"}, status=404)]
    response = await client.call("GET", "orders/999")
    assert response.status == 404
    assert json.loads(response.body) == {"error": "no such order"}


async def test_slow_upstream_times_out_as_504(server, client):
    script, _ = server
    script.responses = [2.0, 2.0, 2.0, 2.0]
    with pytest.raises(UpstreamTimeout) as caught:
        await client.call("POST", "orders", body=b"{}", content_type="application/json")
    assert caught.value.status == 504
    assert len(script.seen) == 1  # a write that may have arrived is not sent again


async def test_a_bad_path_is_the_callers_error_not_a_failed_call(server, client, monkeypatch):
    script, _ = server
    recorded: list[tuple] = []
    monkeypatch.setattr("shared.apim.telemetry.record_call", lambda *args, **kwargs: recorded.append(args))
    with pytest.raises(BadRequest):
        await client.call("GET", "orders/../admin")
    assert recorded == [] and script.seen == []  # nothing sent, nothing in the apim.call.* metrics
    await client.call("GET", "status")
    assert [args[:2] for args in recorded] == [("GET", 200)]


KEY_401 = "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."


async def test_a_401_about_the_subscription_key_costs_no_token_request(server, client):
    script, _ = server
    script.responses = [status(401, message=KEY_401), status(401, message=KEY_401)]
    for _ in range(2):
        with pytest.raises(AccessDenied) as caught:
            await client.call("GET", "status")
        assert "APIM_SUBSCRIPTION_KEY" in caught.value.hint
    assert credential_of(client).calls == 1  # the first token only: a new one cannot fix a key
    assert len(script.seen) == 2  # and nothing was sent again


async def test_a_401_answered_with_the_same_token_is_not_resent_and_the_hint_says_why(server, client):
    script, _ = server
    credential_of(client).same = True
    script.responses = [status(401, message="Invalid JWT.")]
    with pytest.raises(AccessDenied) as caught:
        await client.call("GET", "status")
    assert credential_of(client).calls == 2  # one renewal was asked for
    assert len(script.seen) == 1  # the same token is not sent again
    assert "handed back the same token" in caught.value.hint and "24 hours" in caught.value.hint


async def test_a_persistent_401_costs_one_renewal_per_interval_not_one_per_call(server, client):
    script, _ = server
    script.responses = [status(401, message="Invalid JWT.") for _ in range(10)]
    for _ in range(5):
        with pytest.raises(AccessDenied) as caught:
            await client.call("GET", "status")
    assert credential_of(client).calls == 2  # the first token and one renewal
    assert len(script.seen) == 6  # one resend, after the renewal; then each call once
    assert "at most once every 300 s" in caught.value.hint


async def test_a_refused_calls_hint_reads_the_claims_of_the_token_it_sent(server):
    script, base = server
    settings = Settings(apim_base_url=base, api_app_id_uri="api://contoso-orders", client_id=READER)

    class JwtCredential(StaticCredential):
        async def get_token_info(self, *scopes, options=None):
            self.calls += 1
            claims = {"azp": READER, "roles": [f"Role{self.calls}"], "aud": "api://contoso-orders"}
            return AccessTokenInfo(jwt.encode(claims, "k" * 32, algorithm="HS256"), 4_000_000_000)

    source = TokenSource(JwtCredential("reader"), settings.scope, client_id=READER)
    client = ApimClient(settings, {READER: source}, timeouts=Timeouts(read=0.5, total=5))
    script.responses = [status(401), status(403)]
    try:
        with pytest.raises(AccessDenied) as caught:
            await client.call("GET", "status")
    finally:
        await client.close()
    assert "['Role2']" in caught.value.hint  # the renewed token's, which the 403 answered


@pytest.mark.parametrize("code", [200, 302, 404, 500])
async def test_no_answer_gives_back_the_token_or_the_key(server, client, code):
    script, _ = server

    async def echo(request: web.Request) -> web.Response:
        sent = request.headers["Authorization"] + " " + request.headers["Ocp-Apim-Subscription-Key"]
        return web.Response(status=code, text=json.dumps({"you sent": sent, "message": sent}),
                            headers={"Location": f"/x?auth={sent}", "ETag": sent, "Content-Type": f"text/{sent}"})

    script.responses = [echo, echo, echo, echo]
    try:
        response = await client.call("POST", "orders", body=b"{}", content_type="application/json")
        returned = [response.body.decode(), json.dumps(response.headers), response.content_type or ""]
    except UpstreamError as error:
        returned = [json.dumps(error.to_json()), json.dumps(error.headers), str(error)]
    text = " ".join(returned)
    assert "writer-token-1" not in text and KEY not in text
    assert "[redacted]" in text


async def test_a_body_that_trickles_in_ends_within_the_read_and_total_budgets(server):
    script, base = server
    chunks_sent = []

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for _ in range(40):  # 8 s in all, a byte every 0.2 s: each read is well within the read timeout
            await response.write(b" ")
            chunks_sent.append(1)
            await asyncio.sleep(0.2)
        await response.write_eof()
        return response

    settings = Settings(apim_base_url=base, api_app_id_uri="api://contoso-orders", client_id=READER)
    client = ApimClient(settings, {READER: TokenSource(StaticCredential("reader"), settings.scope, client_id=READER)},
                        timeouts=Timeouts(connect=0.2, read=0.5, total=1.5))
    script.responses = [trickle, trickle, trickle, trickle]
    try:
        with pytest.raises(UpstreamTimeout) as caught:
            await client.call("GET", "status")
    finally:
        await client.close()
    # Unbounded, the first answer would complete (a 200 after 8 s); bounded only by the total, one send.
    assert caught.value.status == 504 and caught.value.code == "upstream_timeout"
    assert len(script.seen) == 2  # each send ended at the read limit, and retried while the total lasted


@pytest.mark.parametrize(("headers", "expected"), [
    ({"Retry-After": "3"}, 3.0), ({"retry-after": "1.5"}, 1.5), ({"Retry-After": "soon"}, None),
    ({"Retry-After": "Wed, 99 Foo 2024 07:28:00 GMT"}, None), ({"Retry-After": "-5"}, 0.0),
    ({"Retry-After": "nan"}, None), ({"Retry-After": "1e999"}, None), ({"retry-after-ms": "250"}, 0.25),
    ({"retry-after-ms": "abc"}, None), ({"Retry-After": "soon", "retry-after-ms": "500"}, 0.5),
    ({"x-ms-retry-after-ms": "2000"}, 2.0), ({"Retry-After": "Wed, 21 Oct 2015 07:28:00"}, None),
    ({"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"}, 0.0), ({}, None),
])
def test_an_unparseable_retry_after_is_treated_as_absent(headers, expected):
    assert retry_after_seconds(headers) == expected


@pytest.mark.parametrize("header", [{"Retry-After": "soon"}, {"Retry-After": "Mon, 32 Foo 2024"},
                                    {"retry-after-ms": "x"}])
async def test_odd_retry_after_values_are_retried_as_without_one(server, client, backoff, header):
    script, _ = server
    script.responses = [web.json_response({"message": "busy"}, status=503, headers=header)]
    response = await client.call("GET", "status")
    assert response.status == 200 and len(script.seen) == 2
    script.responses = [web.json_response({"message": "slow down"}, status=429, headers=header) for _ in range(4)]
    with pytest.raises(Throttled) as caught:
        await client.call("POST", "orders", body=b"{}", content_type="application/json")
    assert caught.value.status == 429


@pytest.mark.parametrize("body", [b"[" * 10_000, b"[" * 100_000, b'{"message": ' * 50_000, b"<html>Bad gateway</html>",
                                  b"\xff\xfe\x00", b'{"message": "x"' + b" " * 200_000 + b"}"])
async def test_an_error_body_that_does_not_parse_still_gives_the_typed_error(server, client, body):
    script, _ = server
    script.responses = [web.Response(status=502, body=body)]
    with pytest.raises(UpstreamError) as caught:
        await client.call("POST", "orders", body=b"{}", content_type="application/json")
    assert caught.value.status == 502 and type(caught.value) is UpstreamError
    script.responses = [web.Response(status=401, body=body), web.Response(status=401, body=body)]
    with pytest.raises(AccessDenied) as denied:
        await client.call("POST", "orders", body=b"{}", content_type="application/json")
    assert denied.value.status == 401


@pytest.mark.parametrize("code", [403, 404, 409])
async def test_a_4xx_with_retry_after_is_not_retried(server, client, backoff, code):
    # azure-core retries any answer that has a Retry-After; APIM's quota policy sends 403 with one.
    script, _ = server
    script.responses = [status(code, "0")]
    with contextlib.suppress(AccessDenied):
        await client.call("GET", "status")
    assert len(script.seen) == 1 and backoff == []


@pytest.mark.parametrize(("body", "quoted"), [
    (b'{"statusCode": 503, "message": "Backend down"}', "Backend down"),
    (b'{"error": {"code": "Unavailable", "message": "Backend down"}}', "Backend down"),  # the API's own shape
    (json.dumps({"message": "Backend down", "padding": "x" * 70_000}).encode(), None),  # not APIM's: not parsed
])
async def test_the_upstreams_message_is_quoted_from_either_shape(server, client, body, quoted):
    script, _ = server
    script.responses = [web.Response(status=503, body=body, content_type="application/json")]
    with pytest.raises(UpstreamError) as caught:
        await client.call("POST", "orders", body=b"{}", content_type="application/json")
    assert caught.value.message == (f"APIM answered 503: {quoted}" if quoted else "APIM answered 503.")


async def test_a_quoted_message_is_scrubbed_of_anything_shaped_like_a_secret(server, client):
    script, _ = server
    other_jwt, opaque = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.c2ln", "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7"
    script.responses = [status(500, message=f"failed for {other_jwt} with {opaque}")]
    with pytest.raises(UpstreamError) as caught:
        await client.call("POST", "orders", body=b"{}", content_type="application/json")
    assert other_jwt not in caught.value.message and opaque not in caught.value.message
    assert caught.value.message == "APIM answered 500: failed for [redacted] with [redacted]"


async def test_the_total_budget_bounds_the_retry_waits_too(server):
    script, base = server
    settings = Settings(apim_base_url=base, api_app_id_uri="api://contoso-orders", client_id=READER)
    client = ApimClient(settings, {READER: TokenSource(StaticCredential("reader"), settings.scope, client_id=READER)},
                        timeouts=Timeouts(connect=0.2, read=0.5, total=0.6, max_retry_after=5))
    script.responses = [status(503, "3")]  # a wait azure-core would sleep through before checking its budget
    try:
        with pytest.raises(UpstreamTimeout):
            await client.call("GET", "status")
    finally:
        await client.close()
    assert len(script.seen) == 1  # slept through, the wait would have ended in a retry (and its 200)
