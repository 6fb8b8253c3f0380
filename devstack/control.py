"""Control API: counters, received telemetry, fault injection, and the platform's token cache,
app role assignments and signing keys (the README's devstack section)."""

from __future__ import annotations

import json

from aiohttp import web

from devstack import logicapp
from devstack.backend import received_requests
from devstack.faults import SERVICES, Fault, FaultSpecError
from devstack.identity.platform import UnknownRole
from devstack.network import add_control_routes, network_model
from devstack.state import StackState

STATE = web.AppKey("state", StackState)


async def get_stats(request: web.Request) -> web.Response:
    """Counters; each service's key is there even before it has served anything."""
    counters = request.app[STATE].stats.snapshot()
    return web.json_response({**{service: {} for service in SERVICES}, **counters})


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
    """Forget counters, telemetry, recorded backend requests, workflow runs and faults, restore
    the configured app role assignments and network model and empty the platform's token cache
    (not the inventory backend's stock levels)."""
    state = request.app[STATE]
    state.roles.reset()
    state.platform.roll_over()
    state.stats.reset()
    state.telemetry.clear()
    received_requests(state).clear()
    logicapp.forget_runs(state)
    state.faults.clear()
    network_model(state).reset()
    return web.Response(status=204)


def _bad_request(message: str) -> web.Response:
    return web.json_response({"error": message}, status=400)


async def _json_object(request: web.Request) -> dict:
    try:
        body = await request.json() if request.can_read_body else {}
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body


async def roll_over_tokens(request: web.Request) -> web.Response:
    """Forget the platform's cached tokens ("as if the platform refreshed"): the next request
    for each identity and resource gets a newly minted token. Body (optional): {"identity": name}."""
    state = request.app[STATE]
    try:
        body = await _json_object(request)
    except ValueError as exc:
        return _bad_request(str(exc))
    name = body.get("identity")
    if name is not None and name not in state.config.identities:
        return _bad_request(f"unknown identity '{name}'; the stack has: {', '.join(sorted(state.config.identities))}")
    dropped = state.platform.roll_over(state.config.identities[name] if name else None)
    return web.json_response({"tokens_dropped": dropped})


async def get_roles(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].roles.snapshot())


async def change_role(request: web.Request) -> web.Response:
    """POST assigns, DELETE removes an app role: {"identity": name, "role": "Orders.Write"}.
    Tokens the platform has cached keep their roles; the next minted token has the change."""
    state = request.app[STATE]
    try:
        body = await _json_object(request)
        name, role = body.get("identity"), body.get("role")
        if not isinstance(name, str) or not isinstance(role, str):
            raise ValueError("give 'identity' and 'role' as strings")
        change = state.roles.assign if request.method == "POST" else state.roles.remove
        roles = change(name, role)
    except (ValueError, UnknownRole) as exc:
        return _bad_request(str(exc))
    return web.json_response({"identity": name, "roles": list(roles)})


async def rotate_signing_key(request: web.Request) -> web.Response:
    """Sign new tokens with a new key; the previous one stays published. Answers the new kid."""
    key = request.app[STATE].issuer.keys.rotate()
    return web.json_response({"kid": key.kid}, status=201)


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
    app.router.add_post("/identity/rollover", roll_over_tokens)
    app.router.add_get("/identity/roles", get_roles)
    app.router.add_post("/identity/roles", change_role)
    app.router.add_delete("/identity/roles", change_role)
    app.router.add_post("/identity/signing-keys/rotate", rotate_signing_key)
    logicapp.add_control_routes(app, state)
    add_control_routes(app, state)  # GET/PUT /network: the APIM delay model
    return app
