"""Fixtures and helpers for the reliability suite.

The real functions run against the devstack, invoked as the host would
(`tests.plugin`). Retry waits are recorded instead of slept, and timeouts
are shortened, so every fault is exercised in well under a second; assertions
are on counts and behaviour only, never on durations.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import azure.functions as func
import pytest
from aiohttp import web
from hypothesis import HealthCheck, settings

# Deterministic property tests: the same examples on every run, nothing stored between runs.
PROPERTIES = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                      suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# A fault's delay, longer than tests.plugin's SHORT_READ_TIMEOUT per attempt.
SLOW_MS = 1000


@pytest.fixture(autouse=True)
def _exporting(telemetry_to_devstack: None) -> None:
    """The session's exporter (set up once, in tests/plugin.py) for every test here."""




def closed_port() -> int:
    """A loopback port that nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Listener:
    """A tiny HTTP server on 127.0.0.1 that records every request (the second listener must see none).

    With `redirect_to`, it answers every request with a 302 there (an upstream gone bad);
    with `respond`, with whatever that returns for the request.
    """

    def __init__(self, redirect_to: str | None = None,
                 respond: Callable[[web.Request], web.Response] | None = None) -> None:
        self.seen: list[dict[str, Any]] = []
        self.port = 0
        self.redirect_to = redirect_to
        self.respond = respond
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _record(self, request: web.Request) -> web.Response:
        self.seen.append({"method": request.method, "path": request.path_qs,
                          "authorization": request.headers.get("Authorization")})
        if self.redirect_to:
            raise web.HTTPFound(self.redirect_to)
        if self.respond:
            return self.respond(request)
        return web.json_response({"stolen": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._record)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    server = Listener()
    await server.start()
    yield server
    await server.stop()


LOGGERS = ("", "azure", "azure.identity", "azure.core", "azure.monitor", "aiohttp", "aiohttp.client",
           "aiohttp.server", "aiohttp.access", "aiohttp.web", "aiohttp.internal", "shared", "devstack", "msal",
           "asyncio", "opentelemetry", "urllib3")


class Capture(logging.Handler):
    """Every record, formatted with its exception and stack, as any log sink would store it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        self.lines: list[str] = []
        self.names: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))
        self.names.add(record.name)


@pytest.fixture
def debug_everything() -> Iterator[Capture]:
    """DEBUG on every logger (the ones named, and any already created), all captured."""
    capture = Capture()
    manager = logging.Logger.manager
    loggers = [logging.getLogger(name) for name in {*LOGGERS, *manager.loggerDict}]
    saved = [(logger, logger.level) for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
        if not logger.propagate:
            logger.addHandler(capture)
    root = logging.getLogger()
    root.addHandler(capture)
    yield capture
    root.removeHandler(capture)
    for logger, level in saved:
        logger.setLevel(level)
        if capture in logger.handlers:
            logger.removeHandler(capture)


def error_of(response: func.HttpResponse, status: int, code: str | None = None) -> dict[str, Any]:
    """The typed JSON error of a response, after checking its shape; never a stack trace."""
    text = response.get_body().decode()
    assert response.status_code == status, text
    assert response.mimetype == "application/json", response.mimetype
    assert "Traceback" not in text and 'File "' not in text, text
    error = json.loads(text)["error"]
    assert isinstance(error["message"], str) and error["message"], text
    if code is not None:
        assert error["code"] == code, text
    return error


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait until `condition()` holds: for effects that land after the caller gave up (slow faults)."""
    for _ in range(200):  # up to 10 s: the devstack's counters are polled, there is nothing to await
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")
