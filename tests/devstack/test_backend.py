"""The sample backend, called directly, as API Management calls it.

It is infra/sample-backend/policy.xml run by the devstack's policy engine: the same file
infra/ deploys as an API of the APIM service, so what these tests see is what Azure serves.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from yarl import URL

from devstack import DevStack
from tests.plugin import SAMPLE_BACKEND

UNAUTHORIZED = ('{ "statusCode": 401, "message": "Unauthorized. Only the API Management service\'s managed '
                'identity may call the sample backend." }')
APIM = "apim"  # call() sends a token of API Management's own identity
ROUND_TRIP_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z$")  # .NET's DateTime.ToString("o")


class Backend:
    """Calls the sample backend with a token of API Management's managed identity, as APIM does."""

    def __init__(self, session: aiohttp.ClientSession, stack: DevStack) -> None:
        self.session = session
        self.stack = stack
        self.url = stack.endpoints["sample_backend_url"]

    def token(self, identity: str = "apim", **changes: Any) -> str:
        state = self.stack.state
        config = state.config
        assert config.apim_identity is not None and config.sample_backend is not None
        who = config.apim_identity if identity == "apim" else config.identities[identity]
        claims = state.issuer.claims_for(who, config.sample_backend.app.app_id_uri)
        claims.update(changes)
        return state.issuer.sign({k: v for k, v in claims.items() if v is not None})

    async def call(self, method: str, path: str, *, token: str | None = APIM, caller: str | None = None,
                   **kwargs: Any) -> tuple[int, Any, str]:
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {self.token() if token == APIM else token}"
        if caller is not None:
            headers["X-Caller-Client-Id"] = caller
        async with self.session.request(method, self.url + path, headers=headers, **kwargs) as response:
            return response.status, response.headers, await response.text()


@pytest.fixture
async def backend(devstack, control) -> AsyncIterator[Backend]:
    async with aiohttp.ClientSession() as session:
        yield Backend(session, devstack)


@pytest.fixture
def reader(endpoints) -> str:
    """The reader identity's client ID, as APIM's policy would pass it on."""
    return endpoints["identities"]["reader"]["client_id"]


# --- only API Management may call -------------------------------------------------------

async def test_without_a_token_it_refuses(backend, control):
    status, _, body = await backend.call("GET", "/status", token=None)
    assert (status, body) == (401, UNAUTHORIZED)


@pytest.mark.parametrize("who", ["reader", "writer", "unassigned", "system"])
async def test_a_token_of_another_identity_is_refused(backend, who):
    # Any identity of the tenant can get a token for the sample backend's app registration
    # (assignment is not required); only the APIM service's own identity is accepted.
    status, _, body = await backend.call("GET", "/orders", token=backend.token(who))
    assert (status, body) == (401, UNAUTHORIZED)


async def test_a_token_of_apim_for_another_audience_is_refused(backend, endpoints):
    status, _, _ = await backend.call("GET", "/orders", token=backend.token(aud=endpoints["api_client_id"]))
    assert status == 401


async def test_the_caller_token_that_apim_accepted_is_refused_here(backend, devstack):
    state = devstack.state
    caller_token = state.issuer.sign(state.issuer.claims_for(state.config.identities["reader"],
                                                             state.config.api.app_id_uri))
    status, _, _ = await backend.call("GET", "/orders", token=caller_token)
    assert status == 401


# --- the answers --------------------------------------------------------------------------

async def test_status_says_ok_and_names_the_caller(backend, reader):
    status, headers, body = await backend.call("GET", "/status", caller=reader)
    assert status == 200 and headers["Content-Type"] == "application/json"
    answer = json.loads(body)
    assert (answer["status"], answer["service"], answer["caller"]) == ("ok", "orders-sample-backend", reader)
    assert ROUND_TRIP_TIME.match(answer["time"]), answer["time"]


async def test_lists_and_gets_the_sample_orders(backend):
    status, _, body = await backend.call("GET", "/orders")
    orders = json.loads(body)
    assert status == 200 and [order["id"] for order in orders] == ["1001", "1002"]
    status, _, body = await backend.call("GET", "/orders/1001")
    assert status == 200
    # Newtonsoft's compact form, byte for byte
    assert body == ('{"id":"1001","item":"Contoso Widget","quantity":2,"status":"received","created_by":null}')


async def test_a_missing_order_is_a_json_404(backend):
    status, _, body = await backend.call("GET", "/orders/no-such-order")
    assert status == 404
    assert json.loads(body) == {"error": {"code": "OrderNotFound", "message": "No order with id 'no-such-order'."}}


async def test_post_echoes_the_order_with_a_location_and_keeps_nothing(backend, reader):
    order = {"item": "Northwind Sprocket", "quantity": 3}
    status, headers, body = await backend.call("POST", "/orders", json=order, caller=reader)
    assert status == 201, body
    created = json.loads(body)
    assert list(created) == ["id", "item", "quantity", "status", "created", "created_by"]
    assert (created["item"], created["quantity"], created["created_by"]) == ("Northwind Sprocket", 3, reader)
    assert ROUND_TRIP_TIME.match(created["created"])
    # Relative to the POST's URL, so it names the order's URL wherever the POST went (RFC 3986 5.2).
    assert headers["Location"] == f"orders/{created['id']}"
    target = URL(backend.url + "/orders").join(URL(headers["Location"]))
    assert str(target) == f"{backend.url}/orders/{created['id']}"
    # Stateless, as in Azure: the created order is not there to get (but the path is an operation's).
    async with backend.session.get(target, headers={"Authorization": f"Bearer {backend.token()}"}) as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "OrderNotFound"


async def test_two_posts_get_two_ids(backend):
    ids = {json.loads((await backend.call("POST", "/orders", json={"item": "x", "quantity": 1}))[2])["id"]
           for _ in range(2)}
    assert len(ids) == 2


ITEM = "'item' is required: a non-empty string"
QUANTITY = "'quantity' is required: an integer of at least 1"
NOT_AN_OBJECT = "the body must be a JSON object"


@pytest.mark.parametrize(("content_type", "body", "status", "problems"), [
    ("text/plain", '{"item": "x", "quantity": 1}', 415, None),
    ("application/json", '{"item": ', 400, [NOT_AN_OBJECT]),
    ("application/json", "", 400, [NOT_AN_OBJECT]),
    ("application/json", "[]", 400, [NOT_AN_OBJECT]),
    ("application/json", '"order"', 400, [NOT_AN_OBJECT]),
    ("application/json", "{}", 400, [ITEM, QUANTITY]),
    ("application/json", '{"item": "x"}', 400, [QUANTITY]),
    ("application/json", '{"item": "", "quantity": 0}', 400, [ITEM, QUANTITY]),
    ("application/json", '{"item": " \\u3000", "quantity": 1}', 400, [ITEM]),  # .NET's Trim() whitespace
    ("application/json", '{"item": null, "quantity": null}', 400, [ITEM, QUANTITY]),
    ("application/json", '{"item": 7, "quantity": "1"}', 400, [ITEM, QUANTITY]),
    ("application/json", '{"item": "x", "quantity": true}', 400, [QUANTITY]),
    ("application/json", '{"item": "x", "quantity": 1.5}', 400, [QUANTITY]),
    ("application/json", '{"item": "x", "quantity": 2.0}', 400, [QUANTITY]),  # a Float token, not an Integer
    ("application/json", '{"item": "x", "quantity": -3}', 400, [QUANTITY]),
    ("application/json", '{"item": "x", "quantity": -0}', 400, [QUANTITY]),
    ("application/json", b'\xff\xfe{"item"', 400, [NOT_AN_OBJECT]),
    # Newtonsoft stops at 64 levels (MaxDepth); Python's parser would recurse on
    ("application/json", '{"item": "x", "quantity": 1, "deep": ' + "[" * 64 + "]" * 64 + "}", 400, [NOT_AN_OBJECT]),
    ("application/json", "[" * 100_000, 400, [NOT_AN_OBJECT]),
])
async def test_post_refuses_bad_orders(backend, control, content_type, body, status, problems):
    answer_status, _, answer = await backend.call("POST", "/orders", data=body, headers={"Content-Type": content_type})
    assert answer_status == status, answer
    error = json.loads(answer)["error"]
    if problems is None:
        assert error["code"] == "UnsupportedMediaType"
    else:
        assert error == {"code": "InvalidOrder", "message": "The order is not valid.", "problems": problems}


@pytest.mark.parametrize("body", [
    '"' + '\\"' * 300_000,  # a string never closed, of escaped quotes: one pass, not one per quote
    "[" * 500_000,
    '{"item": "' + "\\" * 400_000 + '"',
])
async def test_a_large_malformed_body_is_refused_at_once(backend, body):
    # Measured by what it does, not by a clock: the answer is the refusal, and the same body is scanned
    # once (a quadratic scan of this size would hold the whole devstack for minutes).
    status, _, answer = await backend.call("POST", "/orders", data=body, headers={"Content-Type": "application/json"})
    assert (status, json.loads(answer)["error"]["problems"]) == (400, [NOT_AN_OBJECT])


async def test_integers_of_any_length_are_read_and_echoed_as_newtonsoft_does(backend):
    long = "9" * 5000  # past Python's 4,300-digit limit for int <-> str; a BigInteger to Newtonsoft
    data = '{"item": "x", "quantity": ' + long + ', "n": -' + long + "}"
    status, _, body = await backend.call("POST", "/orders", data=data, headers={"Content-Type": "application/json"})
    assert status == 201, body
    assert f'"quantity":{long},' in body


@pytest.mark.parametrize(("item", "expected"), [
    ("a\tb", "a\tb"),  # a raw control character inside a string: Newtonsoft takes it
    ("2024-01-01T00:00:00Z", "2024-01-01T00:00:00Z"),  # a Date token to Newtonsoft, still a string item
])
async def test_what_newtonsoft_reads_as_a_string_item_is_one(backend, item, expected):
    data = '{"item": "' + item.replace("\\t", "\t") + '", "quantity": 1}'
    status, _, body = await backend.call("POST", "/orders", data=data, headers={"Content-Type": "application/json"})
    assert status == 201, body
    assert json.loads(body)["item"] == expected.replace("\\t", "\t")


async def test_brackets_inside_strings_are_not_nesting(backend):
    item = "[" * 100 + "{"
    status, _, body = await backend.call("POST", "/orders", json={"item": item, "quantity": 1,
                                                                 "deep": [[[[1]]]]})
    assert status == 201 and json.loads(body)["item"] == item


@pytest.mark.parametrize("item", ["caf\u00e9", "\u2028 line", 'quote " and \\ backslash', "\U0001f600"])
async def test_the_echo_is_the_item_exactly(backend, item):
    status, _, body = await backend.call("POST", "/orders", json={"item": item, "quantity": 10**30})
    assert status == 201, body
    assert (json.loads(body)["item"], json.loads(body)["quantity"]) == (item, 10**30)


async def test_a_lone_surrogate_in_the_item_is_sent_as_the_replacement_character(backend):
    status, _, body = await backend.call("POST", "/orders", data='{"item": "a\\ud800", "quantity": 1}',
                                         headers={"Content-Type": "application/json"})
    assert status == 201
    assert json.loads(body)["item"] == "a\ufffd"


async def test_routes_that_are_not_operations_get_apims_404(backend):
    for method, path in (("GET", "/nowhere"), ("DELETE", "/orders"), ("GET", "/orders/")):
        status, _, body = await backend.call(method, path)
        assert (status, json.loads(body)["message"]) == (404, "Resource not found"), (method, path)


# --- what the devstack adds: records, counts, faults ------------------------------------

async def test_every_request_is_recorded_without_the_token(backend, control, reader, endpoints):
    token = backend.token()
    async with backend.session.get(f"{backend.url}/orders?top=1",
                                   headers={"Authorization": f"Bearer {token}", "X-Caller-Client-Id": reader}):
        pass
    await backend.call("POST", "/orders", json={"item": "p", "quantity": 1}, caller=reader)

    first, second = control.backend_requests()
    assert (first["method"], first["path"], first["query"], first["status"]) == (
        "GET", f"{SAMPLE_BACKEND}/orders", {"top": "1"}, 200)
    assert first["caller_client_id"] == reader
    assert first["authorization_scheme"] == "Bearer"
    assert first["token_claims"]["oid"] == backend.stack.state.config.apim_identity.principal_id
    assert token not in json.dumps([first, second])
    assert (second["method"], second["status"]) == ("POST", 201)
    assert json.loads(second["body"]) == {"item": "p", "quantity": 1}

    backend_stats = control.stats()["backend"]
    assert backend_stats["requests"] == 2
    assert backend_stats["by_method"] == {"GET": 1, "POST": 1}


async def test_a_backend_fault_answers_before_the_policy_runs(backend, control):
    control.fault("backend", status=503, times=1)
    status, _, _ = await backend.call("POST", "/orders", json={"item": "p", "quantity": 1})
    assert status == 503
    [recorded] = control.backend_requests()
    assert (recorded["method"], recorded["status"]) == ("POST", 503)


async def test_reset_forgets_recorded_requests(backend, control):
    await backend.call("GET", "/status")
    control.reset()
    assert control.backend_requests() == []
