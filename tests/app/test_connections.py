"""Two API connections end to end through the devstack: orders (default) and inventory (named).

Each connection has its own app registration, roles and APIM policy in the stand-in, so a
token for one is refused by the other, and each hint names the connection's own settings.
"""

from __future__ import annotations

import json

import azure.functions as func
import jwt
import pytest

from devstack.invocation import http_request, invocation_context, timer_request
from shared import api, blueprint, runtime
from shared.apim import ApimResponse
from shared.errors import AccessDenied, BadRequest, ConfigurationError

_app = func.FunctionApp()
_app.register_functions(blueprint("inventory"))
INVENTORY = {f.get_function_name(): f.get_user_function() for f in _app.get_functions()}
BASE = "http://localhost:7071/api/apim-inventory"


def inventory_request(method: str, path: str, body: bytes = b"", content_type: str | None = None) -> func.HttpRequest:
    headers = {"Content-Type": content_type} if content_type else {}
    return http_request(method, f"{BASE}/{path}", headers=headers, body=body, route_params={"path": path})


async def test_the_named_connection_calls_its_own_api_with_its_own_token(use_stack, control, endpoints):
    settings = await use_stack("reader")
    response = await INVENTORY["apim_inventory_proxy"](inventory_request("GET", "items/widget"),
                                                       invocation_context("apim_inventory_proxy"))
    assert response.status_code == 200, response.get_body()
    assert json.loads(response.get_body())["in_stock"] == 42
    [received] = control.backend_requests()
    assert received["path"] == "/inventory/items/widget"
    assert received["caller_client_id"] == settings["INVENTORY_MANAGED_IDENTITY_CLIENT_ID"]

    token = (await runtime.get_runtime("inventory").token_source("GET").get()).token
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == endpoints["apis"]["inventory"]["api_app_id_uri"]
    assert claims["roles"] == ["Inventory.Read"]  # only this API's roles, not Orders.Read


async def test_one_token_per_identity_and_connection(use_stack, control):
    await use_stack("reader")
    assert (await api().call("GET", "/orders")).status == 200
    assert (await api("inventory").call("GET", "/items")).status == 200
    assert (await api("inventory").call("POST", "/items", body=b'{"item": "widget", "quantity": 3}',
                                        content_type="application/json")).status == 201
    audiences = {}
    for name in (None, "inventory"):
        for method in ("GET", "POST"):
            source = runtime.get_runtime(name).token_source(method)
            if source.token:
                claims = jwt.decode(source.token.token, options={"verify_signature": False})
                audiences[(name, method)] = (claims["aud"], claims.get("appid") or claims.get("azp"))
    assert len(set(audiences.values())) == len(audiences) == 3  # orders-reader, inventory-reader, inventory-writer
    assert control.stats()["identity"]["token_requests"] == 3


async def test_role_per_method_and_the_hint_names_the_connections_setting(use_stack, endpoints):
    reader = endpoints["identities"]["reader"]["client_id"]
    await use_stack("reader", INVENTORY_MANAGED_IDENTITY_WRITE_CLIENT_ID=reader)
    with pytest.raises(AccessDenied) as denied:
        await api("inventory").call("POST", "/items", body=b'{"item": "widget", "quantity": 1}',
                                    content_type="application/json")
    assert denied.value.status == 403
    assert "INVENTORY_MANAGED_IDENTITY_WRITE_CLIENT_ID" in denied.value.hint
    assert (await api().call("GET", "/status")).status == 200  # the default connection is unaffected


async def test_a_missing_key_names_the_connections_key_setting(use_stack):
    await use_stack("reader", INVENTORY_APIM_SUBSCRIPTION_KEY=None)
    with pytest.raises(AccessDenied) as denied:
        await api("inventory").call("GET", "/items")
    assert denied.value.status == 401
    assert "INVENTORY_APIM_SUBSCRIPTION_KEY" in denied.value.hint
    assert "set APIM_SUBSCRIPTION_KEY" not in denied.value.hint


async def test_a_bad_setting_of_one_connection_leaves_the_other_working(use_stack):
    await use_stack("reader", INVENTORY_APIM_BASE_URL="https://[broken")
    with pytest.raises(ConfigurationError, match="INVENTORY_APIM_BASE_URL"):
        await api("inventory").call("GET", "/items")
    response = await INVENTORY["apim_inventory_health"](http_request("GET", f"{BASE}-health"), None)
    assert response.status_code == 503
    assert "INVENTORY_APIM_BASE_URL" in json.loads(response.get_body())["error"]["problems"][0]
    assert isinstance(await api().call("GET", "/status"), ApimResponse)


async def test_the_named_connections_timer_calls_its_path(use_stack, control):
    await use_stack("reader")
    await INVENTORY["apim_inventory_timer"](timer_request(), invocation_context("apim_inventory_timer"))
    [received] = control.backend_requests()
    assert (received["method"], received["path"]) == ("GET", "/inventory/items")


async def test_a_token_for_one_api_is_refused_by_the_other(use_stack):
    # Point the inventory connection's audience at the orders API: APIM's inventory policy refuses it.
    settings = await use_stack("reader")
    await use_stack("reader", INVENTORY_API_APP_ID_URI=settings["API_APP_ID_URI"])
    with pytest.raises(AccessDenied) as denied:
        await api("inventory").call("GET", "/items")
    assert denied.value.status == 401
    assert "INVENTORY_API_APP_ID_URI" in denied.value.hint


async def test_a_query_in_the_path_is_sent_as_the_query(use_stack, control):
    await use_stack("reader")
    assert (await api().call("GET", "/orders?top=1")).status == 200
    [sent] = control.backend_requests()[-1:]
    assert sent["path"].endswith("/orders/orders") and sent["query"] == {"top": "1"}  # not /orders%3Ftop=1


@pytest.mark.parametrize(("method", "path", "query"), [("get ", "/orders", ""), ("G ET", "/orders", ""),
                                                        ("", "/orders", ""), ("GET", "/orders?a=1", "b=2")])
async def test_a_call_that_cannot_be_sent_is_a_bad_request_before_anything_is_sent(use_stack, control, method,
                                                                                    path, query):
    await use_stack("reader")
    with pytest.raises(BadRequest) as caught:
        await api().call(method, path, query=query)
    assert caught.value.status == 400 and caught.value.message
    assert control.stats()["apim"].get("requests", 0) == 0
