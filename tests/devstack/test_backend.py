"""The sample orders API behind APIM, called directly (what APIM forwards to)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import aiohttp
import pytest


@pytest.fixture
async def backend(endpoints, control) -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    async with aiohttp.ClientSession() as session:
        yield session, endpoints["backend_url"]


@pytest.fixture
def reader(endpoints) -> str:
    """The reader identity's client ID, as APIM's policy would pass it on."""
    return endpoints["identities"]["reader"]["client_id"]


async def test_status_says_ok_and_names_the_caller(backend, reader):
    session, url = backend
    async with session.get(f"{url}/status", headers={"X-Caller-Client-Id": reader}) as response:
        assert response.status == 200
        body = await response.json()
    assert body["status"] == "ok"
    assert body["caller"] == reader
    assert body["time"].endswith("Z")


async def test_lists_and_gets_the_seeded_orders(backend):
    session, url = backend
    async with session.get(f"{url}/orders") as response:
        orders = await response.json()
    assert response.status == 200
    assert {"1001", "1002"} <= {order["id"] for order in orders}
    async with session.get(f"{url}/orders/1001") as response:
        assert response.status == 200
        assert (await response.json())["item"] == "Contoso Widget"


async def test_a_missing_order_is_a_json_404(backend):
    session, url = backend
    async with session.get(f"{url}/orders/no-such-order") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "OrderNotFound"


async def test_post_creates_an_order_with_a_location(backend, reader):
    session, url = backend
    order = {"item": "Northwind Sprocket", "quantity": 3}
    async with session.post(f"{url}/orders", json=order, headers={"X-Caller-Client-Id": reader}) as response:
        assert response.status == 201
        created = await response.json()
        location = response.headers["Location"]
    assert created["item"] == "Northwind Sprocket" and created["quantity"] == 3
    assert created["created_by"] == reader
    assert location == f"/orders/{created['id']}"
    async with session.get(url + location) as response:
        assert (await response.json()) == created


@pytest.mark.parametrize(("content_type", "body", "status", "code"), [
    ("text/plain", '{"item": "x", "quantity": 1}', 415, "UnsupportedMediaType"),
    ("application/json", '{"item": ', 400, "InvalidJson"),
    ("application/json", "[]", 400, "InvalidOrder"),
    ("application/json", '{"item": "x"}', 400, "InvalidOrder"),
    ("application/json", '{"item": "", "quantity": 0}', 400, "InvalidOrder"),
    ("application/json", '{"item": "x", "quantity": true}', 400, "InvalidOrder"),
])
async def test_post_refuses_bad_orders(backend, control, content_type, body, status, code):
    session, url = backend
    before = len(await _orders(session, url))
    async with session.post(f"{url}/orders", data=body, headers={"Content-Type": content_type}) as response:
        assert response.status == status
        assert (await response.json())["error"]["code"] == code
    assert len(await _orders(session, url)) == before


async def test_invalid_order_names_each_problem(backend):
    session, url = backend
    async with session.post(f"{url}/orders", json={}) as response:
        problems = (await response.json())["error"]["problems"]
    assert any("'item'" in p for p in problems) and any("'quantity'" in p for p in problems)


async def test_unknown_routes_and_methods_are_json(backend):
    session, url = backend
    async with session.get(f"{url}/nowhere") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "NotFound"
    async with session.delete(f"{url}/orders") as response:
        assert response.status == 405
        assert "POST" in (await response.json())["error"]["allowed"]


async def test_every_request_is_recorded_without_the_token(backend, control, reader):
    session, url = backend
    headers = {"Authorization": "Bearer secret-token", "X-Caller-Client-Id": reader}
    async with session.get(f"{url}/orders?top=1", headers=headers):
        pass
    async with session.post(f"{url}/orders", json={"item": "p", "quantity": 1}, headers=headers):
        pass

    first, second = control.backend_requests()
    assert (first["method"], first["path"], first["query"], first["status"]) == ("GET", "/orders", {"top": "1"}, 200)
    assert first["caller_client_id"] == reader
    assert first["authorization_scheme"] == "Bearer"
    assert "secret-token" not in json.dumps([first, second])
    assert (second["method"], second["status"]) == ("POST", 201)
    assert json.loads(second["body"]) == {"item": "p", "quantity": 1}

    backend_stats = control.stats()["backend"]
    assert backend_stats["requests"] == 2
    assert backend_stats["by_method"] == {"GET": 1, "POST": 1}


async def test_reset_forgets_recorded_requests_but_keeps_orders(backend, control):
    session, url = backend
    async with session.post(f"{url}/orders", json={"item": "kept", "quantity": 1}) as response:
        order_id = (await response.json())["id"]
    control.reset()
    assert control.backend_requests() == []
    async with session.get(f"{url}/orders/{order_id}") as response:
        assert response.status == 200


async def _orders(session: aiohttp.ClientSession, url: str) -> list[dict]:
    async with session.get(f"{url}/orders") as response:
        return await response.json()
