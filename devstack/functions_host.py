"""A stand-in for the Functions host: the app's functions served over HTTP on loopback.

What `func start` and the host in Azure do for this app, from its own function
metadata (`app.get_functions()`), with nothing hard-coded about its functions:

- each HTTP function at `/<routePrefix>/<route>` (the prefix from host.json, default
  `api`), for its methods only, with its route parameters (catch-all included);
- its auth level enforced with keys (`x-functions-key` header, else `code` query
  parameter): anonymous open, function and admin levels answered 401 with an empty
  body without a valid key, as the host answers;
- the request handed over as the worker builds it, with a trace context per request
  (a child of the caller's `traceparent` when one is sent), and the function's
  response mapped back by the worker's own converter;
- the admin API for the rest: `GET /admin/functions`, `GET /admin/functions/<name>`,
  `POST /admin/functions/<name>` (runs a non-HTTP function once: 202 Accepted) and
  `GET /admin/host/status`, all with the master key.

Where this differs from the real host, the README's list of known differences says so.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure.functions as func
from aiohttp import web

from devstack.function_keys import FunctionKeys, presented_key
from devstack.invocation import (
    AppFunction,
    http_request,
    invocation_context,
    request_url,
    resolve,
    response_parts,
    timer_request,
)
from devstack.routes import DEFAULT_ROUTE_PREFIX
from devstack.serverlog import SERVER_LOGGER
from devstack.stack import LOOPBACK
from devstack.stack import _bind as bind_loopback

logger = logging.getLogger("devstack.functions_host")

MAX_REQUEST_BYTES = 100 * 1024 * 1024  # the host's limit on a request body (100 MB)
HOST_VERSION = "4-devstack"


def route_prefix(host_json: Path) -> str:
    """`extensions.http.routePrefix` from host.json (default `api`; an empty string serves at the root)."""
    try:
        document = json.loads(host_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return DEFAULT_ROUTE_PREFIX
    prefix = document.get("extensions", {}).get("http", {}).get("routePrefix", DEFAULT_ROUTE_PREFIX)
    return str(prefix).strip("/")


@dataclass
class Invocation:
    """One run through the admin endpoint, for whoever wants to know how it ended."""

    function: str
    invocation_id: str
    trace_id: str
    outcome: str = "running"  # then "succeeded" or "failed"
    error_type: str | None = None


@dataclass
class FunctionsHost:
    """The HTTP front of the app's functions; `create_app()` is the aiohttp application."""

    functions: Mapping[str, AppFunction]
    keys: FunctionKeys
    prefix: str = DEFAULT_ROUTE_PREFIX
    invocations: list[Invocation] = field(default_factory=list)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def create_app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.router.add_get("/admin/host/status", self.host_status)
        app.router.add_get("/admin/functions", self.list_functions)
        app.router.add_get("/admin/functions/{name}", self.get_function)
        app.router.add_post("/admin/functions/{name}", self.run_function)
        app.router.add_route("*", "/{tail:.*}", self.call_function)
        app.on_shutdown.append(self._finish_invocations)
        return app

    # ------------------------------------------------------------ HTTP functions

    async def call_function(self, request: web.Request) -> web.StreamResponse:
        route = resolve(self.functions, request.raw_path, request.method, self.prefix)
        if route is None:
            return web.Response(status=404)  # the host's router: no route for this path and method
        function = route.function
        if not self.keys.allows(function.auth_level, presented_key(request.headers, request.query), function.name):
            return web.Response(status=401)
        # The host hands over a body only when the request declared its length (not for chunked bodies).
        body = await request.read() if (request.content_length or 0) > 0 else b""
        headers = {name: ",".join(request.headers.getall(name)) for name in request.headers}
        query_string = request.raw_path.partition("?")[2]
        trigger = http_request(request.method, request_url(f"http://{request.host}", route.path, query_string),
                               headers=headers, body=body, route_params=route.values)
        context = invocation_context(function.name, parent=request.headers.get("traceparent"),
                                     trace_state=request.headers.get("tracestate", ""))
        try:
            parts = response_parts(await function.invoke(trigger, context))
        except Exception as exc:
            # The host answers a failed invocation with a bare 500; what failed is in its logs only.
            logger.error("Function '%s' failed (invocation %s): %s", function.name, context.invocation_id,
                         type(exc).__name__)
            return web.Response(status=500)
        response = web.Response(status=parts.status, body=parts.body)
        for name, value in parts.headers:
            response.headers.add(name, value)
        return response

    # ------------------------------------------------------------ admin API

    def _is_admin(self, request: web.Request) -> bool:
        return self.keys.allows("admin", presented_key(request.headers, request.query))

    async def host_status(self, request: web.Request) -> web.Response:
        if not self._is_admin(request):
            return web.Response(status=401)
        return web.json_response({"id": "devstack", "state": "Running", "version": HOST_VERSION})

    async def list_functions(self, request: web.Request) -> web.Response:
        if not self._is_admin(request):
            return web.Response(status=401)
        return web.json_response([self._metadata(f, request) for f in self.functions.values()])

    async def get_function(self, request: web.Request) -> web.Response:
        if not self._is_admin(request):
            return web.Response(status=401)
        function = self.functions.get(request.match_info["name"])
        if function is None:
            return web.Response(status=404)
        return web.json_response(self._metadata(function, request))

    def _metadata(self, function: AppFunction, request: web.Request) -> dict[str, Any]:
        base = f"http://{request.host}"
        invoke_url = ""
        if function.route is not None:
            invoke_url = f"{base}/{self.prefix}/{function.route.template}" if self.prefix else \
                f"{base}/{function.route.template}"
        return {"name": function.name, "href": f"{base}/admin/functions/{function.name}",
                "invoke_url_template": invoke_url, "language": "python", "isDisabled": False,
                "isDirect": False, "isProxy": False, "config": {"bindings": list(function.bindings)}}

    async def run_function(self, request: web.Request) -> web.Response:
        """Run a function once, as the portal's Test/Run does: 202 at once, the invocation in the background."""
        if not self._is_admin(request):
            return web.Response(status=401)
        try:
            invocation = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            invocation = None
        if not isinstance(invocation, dict):
            return web.Response(status=400)  # the host needs a JSON body such as {"input": ""}
        function = self.functions.get(request.match_info["name"])
        if function is None:
            return web.Response(status=404)
        if function.trigger_type != "timerTrigger":
            # The real host accepts these too; what it then binds is not documented, so it is refused here.
            return web.json_response({"error": f"this stand-in runs only timer functions through the admin API; "
                                      f"'{function.name}' has a {function.trigger_type}"}, status=400)
        # A new trace: the host runs the invocation with the request's trace context suppressed.
        context = invocation_context(function.name)
        record = Invocation(function.name, context.invocation_id, context.trace_id)
        self.invocations.append(record)
        task = asyncio.get_running_loop().create_task(self._run(function, context, record))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return web.Response(status=202)

    async def _run(self, function: AppFunction, context: func.Context, record: Invocation) -> None:
        try:
            await function.invoke(timer_request(), context)
        except Exception as exc:
            record.outcome, record.error_type = "failed", type(exc).__name__
            logger.error("Function '%s' failed (invocation %s): %s", function.name, record.invocation_id,
                         type(exc).__name__)
        else:
            record.outcome = "succeeded"

    async def _finish_invocations(self, app: web.Application) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=30)


class FunctionsHostServer:
    """Runs a `FunctionsHost` on its own event loop in a background thread, as the worker has its own loop."""

    def __init__(self, host: FunctionsHost, port: int = 0) -> None:
        self.host = host
        self.port = port  # 0: a free one
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None

    def start(self) -> str:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="functions-host", daemon=True)
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), loop).result(timeout=30)
        except BaseException:
            self.stop()
            raise
        return self.url

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the host's loop (where the functions run) from another thread."""
        assert self._loop is not None, "the host is not running"
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=timeout)

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), loop).result(timeout=60)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread:
            self._thread.join(timeout=30)
        loop.close()

    async def _start(self) -> None:
        sock = bind_loopback("functions", self.port)  # the stand-ins' own rules (exclusive on Windows)
        self._runner = web.AppRunner(self.host.create_app(), access_log=None, shutdown_timeout=5,
                                     logger=SERVER_LOGGER)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self.url = f"http://{LOOPBACK}:{sock.getsockname()[1]}"
