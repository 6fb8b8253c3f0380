"""Whatever the upstream answers, the caller gets a documented typed error or that answer, and no secret.

The real function (`apim_proxy`), its real token from the identity stand-in, and
an upstream on loopback that answers as hypothesis tells it: any status, odd
headers (`Retry-After: soon`), bodies of every shape and size (JSON nested past
any parser, not JSON, megabytes, our own token and key echoed), and slow or
trickling answers. Invariants, for every example:

- the function returns; never an unhandled exception, never 500 `internal_error`;
- a typed error carries one of the documented codes, with the upstream's status
  where the code is about an answer; anything else is the upstream's own answer;
- the bearer token and the subscription key are in nothing returned, logged or exported;
- token requests stay bounded per identity, however many 401s come back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from hypothesis import event, example, given, settings
from hypothesis import strategies as st

from shared import runtime, telemetry
from shared.apim import Timeouts
from tests.plugin import FUNCTIONS, http_request, invocation_context
from tests.reliability.conftest import PROPERTIES

proxy = FUNCTIONS["apim_proxy"]

TIMEOUTS = Timeouts(connect=0.2, read=0.3, total=0.8, max_retry_after=2)
ECHO = "{echo}"  # replaced by what the upstream was sent: "Bearer <token> <subscription key>"
# The codes the README documents for an answer, and whether their status is the upstream's own.
ANSWER_CODES = {"access_denied": True, "unsupported_media_type": True, "throttled": True, "upstream_error": True,
                "upstream_timeout": False, "upstream_unavailable": False}
REFUSALS = (401, 403, 415, 429)
APIM_KEY_401 = b'{"statusCode": 401, "message": "Access denied due to invalid subscription key."}'


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    timing: str = "prompt"  # or "slow" (headers after the budget), "trickle" (a byte at a time)


@dataclass
class Upstream:
    """Answers every request with `answer`, echoing what it was sent where the answer says {echo}."""

    answer: Answer = field(default_factory=Answer)
    requests: int = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        await request.read()
        sent = f"{request.headers.get('Authorization', '')} {request.headers.get('Ocp-Apim-Subscription-Key', '')}"
        answer = self.answer
        headers = {name: value.replace(ECHO, sent) for name, value in answer.headers.items()}
        body = answer.body.replace(ECHO.encode(), sent.encode())
        if answer.timing == "slow":
            await asyncio.sleep(TIMEOUTS.connect + TIMEOUTS.read + 0.3)
        if answer.timing == "trickle":
            response = web.StreamResponse(status=answer.status, headers=headers)
            await response.prepare(request)
            for _ in range(30):
                await response.write(b" ")
                await asyncio.sleep(0.1)
            await response.write_eof()
            return response
        return web.Response(status=answer.status, headers=headers, body=body)


@pytest.fixture
async def upstream(use_stack, backoff, monkeypatch) -> AsyncIterator[tuple[Upstream, dict[str, str]]]:
    """The app pointed at the loopback upstream (tokens from the identity stand-in), with short budgets."""
    server = Upstream()
    app = web.Application(client_max_size=8 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", server.handle)
    app_runner = web.AppRunner(app, access_log=None)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    port = app_runner.addresses[0][1]
    runtime.use_timeouts(runtime.RuntimeTimeouts(apim=TIMEOUTS))
    settings = await use_stack("reader", APIM_BASE_URL=f"http://127.0.0.1:{port}/orders")
    yield server, settings
    await runtime.reset_runtime()
    runtime.use_timeouts(runtime.RuntimeTimeouts())
    await app_runner.cleanup()


@pytest.fixture
def captured_logs() -> Iterator[list[str]]:
    lines: list[str] = []

    class Handler(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Handler(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield lines
    root.removeHandler(handler)
    root.setLevel(level)


header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e), max_size=40)
retry_after = st.one_of(st.integers(-5, 3).map(str), st.sampled_from(
    ["soon", "", "Wed, 99 Foo 2024 07:28:00 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", "nan", "inf", "1e999", "-1",
     "0.5", ECHO]), header_text)
headers = st.dictionaries(
    st.sampled_from(["Retry-After", "retry-after-ms", "x-ms-retry-after-ms", "Location", "ETag", "Cache-Control",
                     "Content-Type", "X-Echo"]),
    st.one_of(retry_after, header_text, st.just(ECHO), st.sampled_from(
        ["application/json", "text/html; charset=utf-8", "application/problem+json", "x/y; a=" + ECHO])),
    max_size=4)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20) | st.just(ECHO),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                                        max_size=3), max_leaves=10)
bodies = st.one_of(
    st.just(b""),
    json_values.map(lambda value: json.dumps({"statusCode": 0, "message": value}).encode()),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.integers(1, 60_000).map(lambda depth: b"[" * depth),  # nested past any parser's limit
    st.integers(1, 3 * 1024 * 1024).map(lambda size: b"x" * size),  # up to megabytes
    st.binary(max_size=200),  # not text at all
    st.sampled_from([APIM_KEY_401, b"<html>" + ECHO.encode() + b"</html>", ECHO.encode()]),
)
statuses = st.one_of(st.sampled_from([200, 201, 204, 301, 302, 304, 400, 401, 403, 404, 408, 409, 415, 422, 429,
                                      500, 502, 503, 504]), st.integers(200, 599))
answers = st.builds(Answer, status=statuses, headers=headers, body=bodies,
                    timing=st.sampled_from(["prompt"] * 12 + ["slow", "trickle"]))


def check(response: Any, answer: Answer, secrets: list[str]) -> None:
    body = response.get_body()
    returned = f"{response.status_code} {json.dumps(dict(response.headers))} {body!r}"
    for secret in secrets:
        assert secret not in returned, "a secret came back to the caller"
    if response.mimetype == "application/json" and body.startswith(b'{"error"'):
        error = json.loads(body)["error"]
        event(f"error {error['code']}")
        assert error["code"] != "internal_error", returned
        assert error["code"] in ANSWER_CODES, returned
        if ANSWER_CODES[error["code"]]:
            assert response.status_code == answer.status, returned
        else:
            assert response.status_code in (502, 504), returned
        assert answer.status >= 500 or answer.status in REFUSALS or answer.timing != "prompt", returned
        return
    event("the upstream's own answer")
    assert answer.timing != "slow"
    assert response.status_code == answer.status, returned
    assert answer.status < 500 and answer.status not in REFUSALS, returned


@settings(PROPERTIES, max_examples=70)
@given(answer=answers, method=st.sampled_from(["GET", "POST"]))
@example(answer=Answer(status=200, headers={"Location": ECHO}, body=ECHO.encode()), method="GET")
@example(answer=Answer(status=302, headers={"Location": "/x?t=" + ECHO}, body=b""), method="GET")
@example(answer=Answer(status=503, headers={"Retry-After": "soon"}, body=b"[" * 10_000), method="GET")
@example(answer=Answer(status=429, headers={"retry-after-ms": "abc"}, body=b"not json"), method="POST")
@example(answer=Answer(status=401, body=b'{"message": "Invalid JWT."}'), method="GET")
@example(answer=Answer(status=401, body=APIM_KEY_401), method="POST")
@example(answer=Answer(status=200, timing="trickle"), method="GET")
async def test_any_upstream_answer_is_typed_or_passed_on_without_secrets(upstream, control, captured_logs,
                                                                         answer, method):
    server, settings = upstream
    server.answer = answer
    body = b'{"item": "widget"}' if method == "POST" else b""
    headers = {"Content-Type": "application/json"} if body else {}
    response = await proxy(http_request(method, "status", body=body, headers=headers), invocation_context())
    tokens = [source.token.token for source in runtime.get_runtime().token_sources.values() if source.token]
    secrets = [*tokens, settings["APIM_SUBSCRIPTION_KEY"]]
    check(response, answer, secrets)
    logged = "\n".join(captured_logs)
    assert not [secret[:8] for secret in secrets if secret in logged], "a secret was logged"

    # However many 401s came back: per identity, the first token and at most one renewal in this run.
    issued = control.stats().get("identity", {}).get("by_client_id", {})
    assert all(count <= 2 for count in issued.values()), issued


async def test_nothing_secret_was_logged_or_exported(upstream, control, captured_logs):
    # The run above (one runtime per example set) left its logs and telemetry; this one looks at them all.
    server, settings = upstream
    server.answer = Answer(status=200, headers={"ETag": ECHO}, body=ECHO.encode())
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert response.status_code == 200
    server.answer = Answer(status=500, body=json.dumps({"message": ECHO}).encode())
    await proxy(http_request("POST", "orders", body=b"{}", headers={"Content-Type": "application/json"}),
                invocation_context())
    telemetry.flush()
    tokens = [source.token.token for source in runtime.get_runtime().token_sources.values() if source.token]
    everything = "\n".join([*captured_logs, json.dumps(control.telemetry())])
    for secret in [*(token.rsplit(".", 1)[1] for token in tokens), settings["APIM_SUBSCRIPTION_KEY"]]:
        assert secret not in everything


class RawUpstream:
    """Answers every request with a status line and header lines written as raw bytes (no server library
    stands in the way: aiohttp's would refuse to send most of these)."""

    def __init__(self) -> None:
        self.status = 200
        self.header_lines: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readline() not in (b"\r\n", b""):
                pass  # the request's head; a GET has no body
            head = [f"HTTP/1.1 {self.status} Answer".encode(), *self.header_lines,
                    b"Content-Length: 2", b"Connection: close"]
            writer.write(b"\r\n".join(head) + b"\r\n\r\n{}")
            await writer.drain()
        finally:
            writer.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def raw_upstream(use_stack, backoff) -> AsyncIterator[RawUpstream]:
    server = RawUpstream()
    await server.start()
    runtime.use_timeouts(runtime.RuntimeTimeouts(apim=TIMEOUTS))
    await use_stack("reader", APIM_BASE_URL=f"http://127.0.0.1:{server.port}/orders")
    yield server
    await runtime.reset_runtime()
    runtime.use_timeouts(runtime.RuntimeTimeouts())
    await server.stop()


# (status, the upstream's header line, the header the caller gets and its value; None: no such header)
HEADER_VALUES = [
    (200, b"Content-Type: text/plain; charset=\xff\xfe", "Content-Type", "application/octet-stream"),
    (200, b"Content-Type: application/json; charset=caf\xc3\xa9", "Content-Type", "application/octet-stream"),
    (200, b"Content-Type: text/plain\x01", "Content-Type", "application/octet-stream"),
    (200, b"Content-Type: application/json; charset=utf-8", "Content-Type", "application/json; charset=utf-8"),
    (302, b"Location: /x/\xc3(", "Location", None),
    (302, b"Location: /x/caf\xc3\xa9", "Location", None),
    (302, b"Location: /x/\x7f", "Location", None),
    (302, b"Location: /orders/1?a=b%20c", "Location", "/orders/1?a=b%20c"),
    (200, b'ETag: "\x01"', "ETag", None),
    (200, b'ETag: W/"\xe2\x82\xac"', "ETag", None),
    (200, b'ETag: W/"abc"', "ETag", 'W/"abc"'),
    (200, b"Cache-Control: no-cache, \x0bmax-age=0", "Cache-Control", None),
    (200, b"Cache-Control: no-cache,\tmax-age=0", "Cache-Control", "no-cache,\tmax-age=0"),
    (429, b"Retry-After: \xff\xfe", "Retry-After", None),
    (429, b"Retry-After: 120", "Retry-After", "120"),
    (503, b"Retry-After: \xc3\xa9", "Retry-After", None),
    (503, b"Retry-After: 3600", "Retry-After", "3600"),
]


@pytest.mark.parametrize(("status", "line", "name", "expected"), HEADER_VALUES,
                         ids=[f"{s}-{line[:30]!r}" for s, line, _, _ in HEADER_VALUES])
async def test_only_visible_ascii_header_values_reach_the_caller(raw_upstream, status, line, name, expected):
    raw_upstream.status, raw_upstream.header_lines = status, [line]
    response = await proxy(http_request("GET", "status"), invocation_context())
    assert response.status_code == status, response.get_body()
    headers = dict(response.headers)
    assert headers.get(name) == expected, headers
    for value in headers.values():
        assert all(char == "\t" or " " <= char <= "~" for char in value), headers
