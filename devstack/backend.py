"""The sample orders API that APIM forwards to.

Routes (paths as the backend sees them, after APIM strips the API's path):
`GET /status`, `GET /orders`, `GET /orders/{id}`, `POST /orders`.

The backend trusts APIM to authenticate callers, as a real backend behind APIM
does; it only reads the caller's client ID from `X-Caller-Client-Id`, which the
APIM policy sets. Every request that reaches it is recorded (never the
`Authorization` header) so tests can assert what arrived and how often, for
example that a POST was not sent twice.
"""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from devstack.faults import fault_middleware
from devstack.state import StackState

SERVICE_NAME = "orders-backend"
CALLER_HEADER = "X-Caller-Client-Id"
_REQUESTS_KEY = "backend_requests"

SEED_ORDERS = (
    {"item": "Contoso Widget", "quantity": 2},
    {"item": "Fabrikam Gadget", "quantity": 1},
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def received_requests(state: StackState) -> list[dict[str, Any]]:
    """The requests the backend received, oldest first (served at `{control_url}/backend/requests`)."""
    return state.extras.setdefault(_REQUESTS_KEY, [])


def error(status: int, code: str, message: str, **details: Any) -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, **details}}, status=status)


class OrderBook:
    """Orders kept in memory for the life of the stack, with a couple of samples."""

    def __init__(self) -> None:
        self._orders: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1001)
        for order in SEED_ORDERS:
            self.add(order, created_by=None)

    def all(self) -> list[dict[str, Any]]:
        return list(self._orders.values())

    def get(self, order_id: str) -> dict[str, Any] | None:
        return self._orders.get(order_id)

    def add(self, fields: dict[str, Any], created_by: str | None) -> dict[str, Any]:
        order = {"id": str(next(self._ids)), **fields, "status": "received",
                 "created": _now(), "created_by": created_by}
        self._orders[order["id"]] = order
        return order


STATE = web.AppKey("state", StackState)
ORDERS = web.AppKey("orders", OrderBook)


def validate_order(body: Any) -> tuple[dict[str, Any], list[str]]:
    """Return (the order's fields, problems). An order names an item and a positive quantity."""
    if not isinstance(body, dict):
        return {}, ["the body must be a JSON object"]
    problems = []
    item, quantity = body.get("item"), body.get("quantity")
    if not isinstance(item, str) or not item.strip():
        problems.append("'item' is required: a non-empty string")
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        problems.append("'quantity' is required: an integer of at least 1")
    return {"item": item, "quantity": quantity}, problems


def _is_json(content_type: str) -> bool:
    return content_type == "application/json" or (content_type.startswith("application/") and
                                                  content_type.endswith("+json"))


async def get_status(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "service": SERVICE_NAME, "time": _now(),
                              "caller": request.headers.get(CALLER_HEADER)})


async def list_orders(request: web.Request) -> web.Response:
    return web.json_response(request.app[ORDERS].all())


async def get_order(request: web.Request) -> web.Response:
    order_id = request.match_info["order_id"]
    order = request.app[ORDERS].get(order_id)
    if order is None:
        return error(404, "OrderNotFound", f"No order with id '{order_id}'.")
    return web.json_response(order)


async def create_order(request: web.Request) -> web.Response:
    if not _is_json(request.content_type):
        return error(415, "UnsupportedMediaType",
                     f"Send the order as JSON (Content-Type: application/json), not '{request.content_type}'.")
    try:
        body = json.loads(await request.text())
    except json.JSONDecodeError as exc:
        return error(400, "InvalidJson", f"The body is not valid JSON: {exc}.")
    fields, problems = validate_order(body)
    if problems:
        return error(400, "InvalidOrder", "The order is not valid.", problems=problems)
    order = request.app[ORDERS].add(fields, created_by=request.headers.get(CALLER_HEADER))
    # The backend's own path: APIM passes Location through unchanged unless a
    # policy rewrites it, as it would in Azure.
    return web.json_response(order, status=201, headers={"Location": f"/orders/{order['id']}"})


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
        "body": body.decode("utf-8", errors="replace"),
        "caller_client_id": request.headers.get(CALLER_HEADER),
        "time": _now(),
        "status": None,
    }


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Unknown paths and methods get JSON errors like the rest of the API."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as exc:
        return error(405, "MethodNotAllowed", f"{request.method} is not allowed on {request.path}.",
                     allowed=sorted(exc.allowed_methods))
    except web.HTTPNotFound:
        return error(404, "NotFound", f"No route for {request.path}.")


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
    fields, problems = validate_order(body)  # the same shape as an order: an item and a quantity
    if problems:
        return error(400, "InvalidStock", "The stock receipt is not valid.", problems=problems)
    stock = request.app[STOCK]
    stock[fields["item"]] = stock.get(fields["item"], 0) + fields["quantity"]
    return web.json_response({"item": fields["item"], "in_stock": stock[fields["item"]]}, status=201)


def create_app(state: StackState) -> web.Application:
    app = web.Application(middlewares=[record_requests, fault_middleware("backend", state.faults), json_errors])
    app[STATE] = state
    app[ORDERS] = OrderBook()
    app.router.add_get("/status", get_status)
    app.router.add_get("/orders", list_orders)
    app.router.add_post("/orders", create_order)
    app.router.add_get("/orders/{order_id}", get_order)
    app[STOCK] = dict(SEED_STOCK)
    app.router.add_get("/inventory/items", list_items)
    app.router.add_get("/inventory/items/{item}", get_item)
    app.router.add_post("/inventory/items", receive_stock)
    return app
