"""ApimClient against a scripted local server: retry rules, 401 renewal, typed errors, headers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web
from azure.core.credentials import AccessTokenInfo

from shared.apim import ApimClient, Timeouts
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

    responses: list[web.Response | float] = field(default_factory=list)
    seen: list[dict] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({"method": request.method, "path": request.path_qs, "headers": dict(request.headers),
                          "body": await request.read()})
        step = self.responses.pop(0) if self.responses else web.json_response({"ok": True})
        if isinstance(step, float):  # a delay, then OK
            await asyncio.sleep(step)
            return web.json_response({"ok": True})
        return step


class StaticCredential:
    def __init__(self, name: str) -> None:
        self.name, self.calls = name, 0

    async def get_token_info(self, *scopes, options=None):
        self.calls += 1
        return AccessTokenInfo(f"{self.name}-token-{self.calls}", 4_000_000_000)

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


@pytest.fixture
async def client(server) -> AsyncIterator[ApimClient]:
    _, base = server
    settings = Settings(apim_base_url=base, api_app_id_uri="api://contoso-orders", subscription_key="k3y",
                        client_id=READER, write_client_id=WRITER)
    sources = {cid: TokenSource(StaticCredential(name), settings.scope, client_id=cid)
               for cid, name in ((READER, "reader"), (WRITER, "writer"))}
    client = ApimClient(settings, sources, timeouts=Timeouts(read=0.5, total=5, max_retry_after=2))
    yield client
    await client.close()


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
    assert get["headers"]["Ocp-Apim-Subscription-Key"] == "k3y"
    assert post["headers"]["Content-Type"] == "application/json"
    assert post["body"] == b'{"item": "x"}'
    assert get["path"] == "/orders/status"


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
