"""Control API: counters, received telemetry and fault injection (the README's devstack section)."""

from __future__ import annotations

import json

from aiohttp import web

from devstack.backend import received_requests
from devstack.faults import Fault, FaultSpecError
from devstack.state import StackState

STATE = web.AppKey("state", StackState)


async def get_stats(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].stats.snapshot())


async def get_telemetry(request: web.Request) -> web.Response:
    return web.json_response(list(request.app[STATE].telemetry))


async def get_backend_requests(request: web.Request) -> web.Response:
    """What reached the backend, oldest first (no Authorization header in it)."""
    return web.json_response(received_requests(request.app[STATE]))


async def get_endpoints(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].endpoints)


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].faults.pending())


async def add_fault(request: web.Request) -> web.Response:
    try:
        fault = Fault.from_json(await request.json())
    except (json.JSONDecodeError, TypeError, FaultSpecError) as exc:
        return web.json_response({"error": f"bad fault: {exc}"}, status=400)
    request.app[STATE].faults.add(fault)
    return web.json_response(vars(fault), status=201)


async def clear_faults(request: web.Request) -> web.Response:
    request.app[STATE].faults.clear()
    return web.Response(status=204)


async def reset(request: web.Request) -> web.Response:
    """Forget counters, telemetry, recorded backend requests and faults (not the backend's orders)."""
    state = request.app[STATE]
    state.stats.reset()
    state.telemetry.clear()
    received_requests(state).clear()
    state.faults.clear()
    return web.Response(status=204)


def create_app(state: StackState) -> web.Application:
    app = web.Application()
    app[STATE] = state
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/telemetry", get_telemetry)
    app.router.add_get("/backend/requests", get_backend_requests)
    app.router.add_get("/endpoints", get_endpoints)
    app.router.add_get("/faults", get_faults)
    app.router.add_post("/faults", add_fault)
    app.router.add_delete("/faults", clear_faults)
    app.router.add_post("/reset", reset)
    return app
