"""The Functions host stand-in, against a small app of its own with every auth level and trigger kind.

The app's own functions go through it in tests/scenarios; here each host behaviour is
pinned: routing, keys, the request the function gets, the response mapping, the admin API.
"""

from __future__ import annotations

import asyncio
import json
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from devstack.function_keys import FunctionKeys
from devstack.functions_host import FunctionsHost, route_prefix
from devstack.invocation import app_functions

APP = textwrap.dedent('''
    import json
    import azure.functions as func

    app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
    runs = []

    def _echo(req, context):
        return func.HttpResponse(json.dumps({
            "method": req.method, "url": req.url, "headers": dict(req.headers), "params": dict(req.params),
            "route_params": dict(req.route_params), "body": req.get_body().decode(),
            "trace_parent": context.trace_context.trace_parent, "function": context.function_name,
        }), mimetype="application/json")

    @app.route(route="echo/{*rest}", methods=["GET", "POST"])
    def echo(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return _echo(req, context)

    @app.route(route="items/{id:int}/{label?}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def item(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return _echo(req, context)

    @app.route(route="items/latest", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
    def latest(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        return _echo(req, context)

    @app.route(route="admin-only", auth_level=func.AuthLevel.ADMIN)
    def admin_only(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("admin", status_code=200)

    @app.route(route="shaped", auth_level=func.AuthLevel.ANONYMOUS)
    async def shaped(req: func.HttpRequest) -> func.HttpResponse:
        return func.HttpResponse("<p>hi</p>", status_code=418, mimetype="text/html", headers={"X-Custom": "yes",
                                 "Set-Cookie": "a=1; Path=/"})

    @app.route(route="text", auth_level=func.AuthLevel.ANONYMOUS)
    def text(req: func.HttpRequest) -> str:
        return "plain"

    @app.route(route="nothing", auth_level=func.AuthLevel.ANONYMOUS)
    def nothing(req: func.HttpRequest) -> None:
        return None

    @app.route(route="broken", auth_level=func.AuthLevel.ANONYMOUS)
    def broken(req: func.HttpRequest) -> func.HttpResponse:
        raise RuntimeError("secret detail")

    @app.timer_trigger(schedule="0 0 * * * *", arg_name="tick")
    async def hourly(tick: func.TimerRequest, context: func.Context) -> None:
        runs.append({"past_due": tick.past_due, "status": tick.schedule_status, "function": context.function_name})

    @app.timer_trigger(schedule="0 0 * * * *", arg_name="tick")
    def failing(tick: func.TimerRequest) -> None:
        raise RuntimeError("the run fails")
''')


@pytest.fixture(scope="module")
def tiny_app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("tiny_app")
    (folder / "tiny_function_app.py").write_text(APP, encoding="utf-8")
    sys.path.insert(0, str(folder))
    try:
        functions = app_functions("tiny_function_app")
        yield functions, sys.modules["tiny_function_app"]
    finally:
        sys.path.remove(str(folder))


class Host:
    def __init__(self, server: TestServer, host: FunctionsHost, session: ClientSession) -> None:
        self.server, self.host, self.session = server, host, session
        self.keys = host.keys

    def url(self, path: str) -> str:
        return str(self.server.make_url("")) .rstrip("/") + path

    async def get(self, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        return await self.request("GET", path, **kwargs)

    async def request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, str], bytes]:
        from yarl import URL

        async with self.session.request(method, URL(self.url(path), encoded=True), **kwargs) as response:
            return response.status, dict(response.headers), await response.read()


@pytest.fixture
async def host(tiny_app: Any) -> AsyncIterator[Host]:
    functions, _ = tiny_app
    stand_in = FunctionsHost(functions, FunctionKeys.generate(functions))
    server = TestServer(stand_in.create_app(), host="127.0.0.1")
    await server.start_server()
    async with ClientSession() as session:
        yield Host(server, stand_in, session)
    await server.close()


async def finished(stand_in: FunctionsHost) -> None:
    """Until the last admin run has ended (it runs after the 202, in the background)."""
    for _ in range(500):
        if stand_in.invocations and stand_in.invocations[-1].outcome != "running":
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the run never ended")


def echoed(body: bytes) -> dict[str, Any]:
    return json.loads(body)


# ---------------------------------------------------------------- keys and auth levels


async def test_function_level_needs_a_key_and_is_answered_401_with_no_body_without_one(host: Host) -> None:
    assert (await host.get("/api/echo/x"))[::2] == (401, b"")
    assert (await host.get("/api/echo/x?code=wrong"))[0] == 401
    assert (await host.get("/api/echo/x", headers={"x-functions-key": "wrong"}))[0] == 401


async def test_host_keys_open_every_function_and_a_function_key_only_its_own(host: Host) -> None:
    keys = host.keys
    assert (await host.get(f"/api/echo/x?code={keys.host['default']}"))[0] == 200
    assert (await host.get(f"/api/echo/x?code={keys.functions['echo']['default']}"))[0] == 200
    assert (await host.get("/api/echo/x", headers={"x-functions-key": keys.master}))[0] == 200
    assert (await host.get(f"/api/echo/x?code={keys.functions['admin_only']['default']}"))[0] == 401


async def test_the_header_key_wins_over_the_query_key(host: Host) -> None:
    good = host.keys.host["default"]
    assert (await host.get(f"/api/echo/x?code={good}", headers={"x-functions-key": "wrong"}))[0] == 401
    assert (await host.get("/api/echo/x?code=wrong", headers={"x-functions-key": good}))[0] == 200


async def test_anonymous_routes_are_open_even_with_a_wrong_key(host: Host) -> None:
    assert (await host.get("/api/items/7"))[0] == 200
    assert (await host.get("/api/items/7?code=wrong"))[0] == 200


async def test_admin_level_takes_the_master_key_only(host: Host) -> None:
    assert (await host.get(f"/api/admin-only?code={host.keys.host['default']}"))[0] == 401
    status, _, body = await host.get(f"/api/admin-only?code={host.keys.master}")
    assert (status, body) == (200, b"admin")


def test_keys_are_new_each_run_and_never_in_a_repr() -> None:
    first, second = FunctionKeys.generate(["a"]), FunctionKeys.generate(["a"])
    assert first.master != second.master and first.host != second.host
    assert first.level_of(None) == first.level_of("") == "anonymous"
    with pytest.raises(ValueError, match="unknown auth level"):
        first.allows("system", first.master)


# ---------------------------------------------------------------- routing


async def test_routes_match_methods_parameters_constraints_and_literals_first(host: Host) -> None:
    assert (await host.request("DELETE", f"/api/echo/x?code={host.keys.master}"))[0] == 404  # method not allowed
    assert (await host.get("/api/items/seven"))[0] == 404  # {id:int}
    assert (await host.get("/api/nowhere"))[0] == 404
    assert (await host.get("/items/7"))[0] == 404  # outside the route prefix
    assert echoed((await host.get("/api/items/latest"))[2])["function"] == "latest"  # the literal route wins
    assert echoed((await host.get("/API/Items/7/big"))[2])["route_params"] == {"id": "7", "label": "big"}
    assert echoed((await host.get("/api/items/7"))[2])["route_params"] == {"id": "7"}  # optional, absent


async def test_catch_all_gets_the_decoded_rest_with_2f_kept_and_dot_segments_removed(host: Host) -> None:
    key = host.keys.master
    routed = echoed((await host.get(f"/api/echo/a/b%20c/caf%C3%A9/x%2Fy/./z/../w?code={key}"))[2])
    assert routed["route_params"] == {"rest": "a/b c/café/x%2Fy/w"}
    assert routed["url"].startswith(f"http://127.0.0.1:{host.server.port}/api/echo/a/b%20c/caf%C3%A9/x%2Fy/w?")
    assert echoed((await host.get(f"/api/echo?code={key}"))[2])["route_params"] == {}  # empty catch-all
    assert (await host.get(f"/api/echo/%2e%2e/items/7?code={key}"))[0] == 200  # = /api/items/7
    assert (await host.get(f"/api/echo/%2e%2e/%2e%2e/items/7?code={key}"))[0] == 404  # = /items/7


def test_route_prefix_comes_from_host_json(tmp_path: Path) -> None:
    assert route_prefix(tmp_path / "missing.json") == "api"
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": "/v1/"}}}))
    assert route_prefix(tmp_path / "host.json") == "v1"
    (tmp_path / "host.json").write_text(json.dumps({"extensions": {"http": {"routePrefix": ""}}}))
    assert route_prefix(tmp_path / "host.json") == ""


async def test_an_empty_route_prefix_serves_at_the_root(tiny_app: Any) -> None:
    functions, _ = tiny_app
    stand_in = FunctionsHost(functions, FunctionKeys.generate(functions), prefix="")
    server = TestServer(stand_in.create_app(), host="127.0.0.1")
    await server.start_server()
    try:
        async with ClientSession() as session, session.get(server.make_url("/items/7")) as response:
            assert response.status == 200
    finally:
        await server.close()


# ---------------------------------------------------------------- the request the function gets


async def test_the_request_is_built_as_the_worker_builds_it(host: Host) -> None:
    key = host.keys.host["default"]
    status, _, body = await host.request("POST", f"/api/echo/orders/1?a=1&a=2&empty=&code={key}",
                                         data=b'{"x": 1}', headers={"Content-Type": "application/json",
                                                                    "X-Mixed-Case": "v"})
    assert status == 200
    seen = echoed(body)
    assert seen["method"] == "POST"
    assert seen["params"] == {"a": "1,2", "code": key}  # repeated names joined, empty values left out
    assert seen["headers"]["x-mixed-case"] == "v" and seen["headers"]["content-type"] == "application/json"
    assert all(name == name.lower() for name in seen["headers"])
    assert seen["route_params"] == {"rest": "orders/1"}
    assert seen["body"] == '{"x": 1}'


async def test_a_chunked_body_is_not_handed_over_as_in_the_host(host: Host) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"streamed"

    status, _, body = await host.request("POST", f"/api/echo/x?code={host.keys.master}", data=chunks())
    assert status == 200 and echoed(body)["body"] == ""


async def test_each_request_gets_a_trace_context_joining_the_callers_trace(host: Host) -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    joined = echoed((await host.get("/api/items/7", headers={"traceparent": parent}))[2])["trace_parent"]
    version, trace_id, span_id, flags = joined.split("-")
    assert (version, trace_id, flags) == ("00", "0af7651916cd43dd8448eb211c80319c", "01")
    assert span_id != "b7ad6b7169203331" and len(span_id) == 16
    fresh = {echoed((await host.get("/api/items/7", headers=h))[2])["trace_parent"].split("-")[1]
             for h in ({}, {"traceparent": "garbage"}, {"traceparent": "00-" + "0" * 32 + "-" + "1" * 16 + "-01"})}
    assert len(fresh) == 3 and trace_id not in fresh


# ---------------------------------------------------------------- the response


async def test_the_response_keeps_status_headers_content_type_and_cookies(host: Host) -> None:
    async with host.session.get(host.url("/api/shaped")) as response:
        assert response.status == 418
        assert response.headers["X-Custom"] == "yes"
        assert response.headers["Content-Type"] == "text/html; charset=utf-8"
        assert response.cookies["a"].value == "1"
        assert await response.read() == b"<p>hi</p>"


async def test_str_none_and_exceptions_map_as_in_the_host(host: Host) -> None:
    assert (await host.get("/api/text"))[::2] == (200, b"plain")
    assert (await host.get("/api/nothing"))[::2] == (200, b"")
    status, _, body = await host.get("/api/broken")
    assert (status, body) == (500, b"")  # the host's bare 500: no detail, no stack trace


# ---------------------------------------------------------------- the admin API


async def test_admin_api_lists_functions_with_their_bindings_for_the_master_key_only(host: Host) -> None:
    assert (await host.get("/admin/functions"))[0] == 401
    assert (await host.get(f"/admin/functions?code={host.keys.host['default']}"))[0] == 401
    status, _, body = await host.get("/admin/functions", headers={"x-functions-key": host.keys.master})
    listed = {f["name"]: f for f in json.loads(body)}
    assert status == 200 and set(listed) >= {"echo", "hourly", "admin_only"}
    assert listed["hourly"]["config"]["bindings"][0]["type"] == "timerTrigger"
    assert listed["echo"]["invoke_url_template"].endswith("/api/echo/{*rest}")
    assert (await host.get("/admin/functions/hourly", headers={"x-functions-key": host.keys.master}))[0] == 200
    assert (await host.get("/admin/functions/nope", headers={"x-functions-key": host.keys.master}))[0] == 404
    assert (await host.get(f"/admin/host/status?code={host.keys.master}"))[0] == 200


async def test_a_timer_runs_once_through_the_admin_endpoint_202_then_in_the_background(host: Host,
                                                                                      tiny_app: Any) -> None:
    _, module = tiny_app
    master = {"x-functions-key": host.keys.master}
    status, _, _ = await host.request("POST", "/admin/functions/hourly", json={"input": ""}, headers=master)
    assert status == 202
    await finished(host.host)
    assert module.runs[-1]["function"] == "hourly" and module.runs[-1]["past_due"] is False
    assert set(module.runs[-1]["status"]) == {"Last", "Next", "LastUpdated"}
    assert host.host.invocations[-1].outcome == "succeeded"

    assert (await host.request("POST", "/admin/functions/failing", json={"input": ""}, headers=master))[0] == 202
    await finished(host.host)
    assert host.host.invocations[-1].outcome == "failed" and host.host.invocations[-1].error_type == "RuntimeError"


async def test_admin_run_refuses_without_master_key_body_or_a_known_timer(host: Host) -> None:
    master = {"x-functions-key": host.keys.master}
    assert (await host.request("POST", "/admin/functions/hourly", json={"input": ""},
                               headers={"x-functions-key": host.keys.host["default"]}))[0] == 401
    assert (await host.request("POST", "/admin/functions/hourly", headers=master))[0] == 400  # no body
    assert (await host.request("POST", "/admin/functions/nope", json={"input": ""}, headers=master))[0] == 404
    assert (await host.request("POST", "/admin/functions/echo", json={"input": ""}, headers=master))[0] == 400
