"""The backend service: what APIM forwards to.

- The **sample backend** of the Orders API, under `/<sample_backend.api_path>`
  (`/sample-backend/orders/status`, `/orders`, `/orders/{id}`): infra/sample-backend/policy.xml,
  the very file infra/ deploys as an API of the APIM service, run by the devstack's policy engine
  (`devstack.apim.sample_backend_gateway`). It accepts only the APIM service's own managed identity,
  and it keeps nothing (a created order is echoed, not stored), exactly as in Azure.
- The **inventory** API's backend, under `/inventory`: the devstack's second API, which
  exists only here (it tests named connections) and keeps stock levels for the life of the stack.

Every request that reaches the service is recorded (never the `Authorization` header) and
counted, and backend faults apply to it, before either backend answers: tests can assert what
arrived and how often, for example that a POST was not sent twice.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import jwt
from aiohttp import web

from devstack.faults import fault_middleware
from devstack.state import StackState

CALLER_HEADER = "X-Caller-Client-Id"
_REQUESTS_KEY = "backend_requests"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def received_requests(state: StackState) -> list[dict[str, Any]]:
    """The requests the backend received, oldest first (served at `{control_url}/backend/requests`)."""
    return state.extras.setdefault(_REQUESTS_KEY, [])


def error(status: int, code: str, message: str, **details: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **details}}, status=status)


STATE = web.AppKey("state", StackState)


def validate_stock(body: Any) -> tuple[dict[str, Any], list[str]]:
    """Return (the receipt's fields, problems). A receipt names an item and a positive quantity."""
    if not isinstance(body, dict):
        return {}, ["the body must be a JSON object"]
    problems = []
    item, quantity = body.get("item"), body.get("quantity")
    if not isinstance(item, str) or not item.strip():
        problems.append("'item' is required: a non-empty string")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        problems.append("'quantity' is required: an integer of at least 1")
    return {"item": item, "quantity": quantity}, problems


@web.middleware
async def record_requests(request: web.Request, handler: Any) -> web.StreamResponse:
    """Count and record every request, before faults apply, then note the status sent."""
    state = request.app[STATE]
    state.stats.count("backend", "requests")
    state.stats.count("backend", "by_method", request.method)
    entry = await _describe(request)
    received_requests(state).append(entry)
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        entry["status"] = exc.status
        raise
    entry["status"] = response.status
    return response


def _token_claims(authorization: str) -> dict[str, Any] | None:
    """Who a bearer token names (aud, oid, azp or appid), read without checking it; never the token."""
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token:
        return None
    named = _named_by(token)
    return None if named is None else dict(named)  # a copy: each entry is its own


# Remembered: the same token arrives on every call, and PyJWT's decoding is slow (devstack.apim.jwt_validation).
@functools.lru_cache(maxsize=256)
def _named_by(token: str) -> dict[str, Any] | None:
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    return {name: claims[name] for name in ("aud", "oid", "azp", "appid") if name in claims}


async def _describe(request: web.Request) -> dict[str, Any]:
    headers = {k: v for k, v in request.headers.items() if k.lower() != "authorization"}
    scheme = request.headers.get("Authorization", "").partition(" ")[0] or None
    body = await request.read() if request.can_read_body else b""
    return {
        "method": request.method,
        "path": request.path,
        "query": dict(request.query),
        "headers": headers,
        "authorization_scheme": scheme,  # "Bearer" if a token arrived; never the token
        "token_claims": _token_claims(request.headers.get("Authorization", "")),
        "body": body.decode("utf-8", errors="replace"),
        "caller_client_id": request.headers.get(CALLER_HEADER),
        "time": _now(),
        "status": None,
    }


# The inventory API (the devstack's second API, under /inventory): stock levels by item.
STOCK = web.AppKey("stock", dict)
SEED_STOCK = {"widget": 42, "gadget": 7}


async def list_items(request: web.Request) -> web.Response:
    return web.json_response([{"item": item, "in_stock": count} for item, count in request.app[STOCK].items()])


async def get_item(request: web.Request) -> web.Response:
    item = request.match_info["item"]
    if item not in request.app[STOCK]:
        return error(404, "ItemNotFound", f"No item '{item}'.")
    return web.json_response({"item": item, "in_stock": request.app[STOCK][item],
                              "caller": request.headers.get(CALLER_HEADER)})


async def receive_stock(request: web.Request) -> web.Response:
    """POST /items {"item": "widget", "quantity": 3}: stock received; answers the new level."""
    try:
        body = json.loads(await request.text())
    except json.JSONDecodeError as exc:
        return error(400, "InvalidJson", f"The body is not valid JSON: {exc}.")
    fields, problems = validate_stock(body)
    if problems:
        return error(400, "InvalidStock", "The stock receipt is not valid.", problems=problems)
    stock = request.app[STOCK]
    stock[fields["item"]] = stock.get(fields["item"], 0) + fields["quantity"]
    return web.json_response({"item": fields["item"], "in_stock": stock[fields["item"]]}, status=201)


def create_app(state: StackState) -> web.Application:
    # Imported here: devstack.apim imports the policy engine, which `import devstack` need not load.
    from devstack.apim import sample_backend_gateway

    app = web.Application(middlewares=[record_requests, fault_middleware("backend", state.faults)])
    app[STATE] = state
    app[STOCK] = dict(SEED_STOCK)
    app.router.add_get("/inventory/items", list_items)
    app.router.add_get("/inventory/items/{item}", get_item)
    app.router.add_post("/inventory/items", receive_stock)
    if state.config.sample_backend is not None:
        gateway = sample_backend_gateway(state, app)
        # APIM picks the API by path; anything else gets APIM's own 404 from the gateway.
        app.router.add_route("*", "/{tail:.*}", gateway.handle)
    return app
