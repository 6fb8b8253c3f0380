"""Bad input to the HTTP triggers, property-based: every request gets a clear 4xx or a correct forward.

Thousands of cases run against `shared.paths` and the proxy handler with the
network call stubbed out (cheap), a few hundred against the real chain. In all
of them the bearer token only ever goes to APIM_BASE_URL's origin: the devstack
counts what APIM received, and a second listener on 127.0.0.1 — named in many of
the crafted paths — must see no request at all.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, quote

import azure.functions as func
import pytest
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from yarl import URL

from devstack.invocation import http_request
from shared import handlers
from shared.apim import ApimClient, ApimResponse
from shared.errors import BadRequest
from shared.paths import build_url, forwarded_query, without_function_key
from tests.plugin import FUNCTIONS, INDEXED, invocation_context
from tests.reliability.conftest import PROPERTIES, Listener, error_of

proxy = FUNCTIONS["apim_proxy"]
BASE = "https://contoso.azure-api.net/orders"
ALLOWED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
LISTENER = "{listener}"  # replaced by the second listener's host:port in the end-to-end cases

# Pieces of paths that have turned proxies around: traversal (plain, encoded, double-encoded,
# with ;params), other hosts (absolute, scheme-relative, backslashes, userinfo), control
# characters (CR/LF, NUL, tab), look-alikes (full-width and one-dot leaders, zero-width and
# bidi characters) and plain segments. Drawn as lists of pieces: a fraction of the cost of
# free text per example, so thousands of cases take seconds.
PATH_PIECES = [
    "..", ".", "/", "//", "\\", "\\\\", "%2e", "%2E%2e", "%2f", "%2F", "%5c", "%252e%252e", "%25", "%", "%zz",
    "..;", ";x=1", ":", "@", "?", "#", "&", "=", "+", " ", "\t", "\r", "\n", "\r\n", "\x00", "\x7f",
    "http:", "https://", "HTTP://", "file:", "//evil.example", "evil.example", "127.0.0.1", LISTENER,
    "\uff0e\uff0e", "\u2024", "\u200b", "\u202e", "\u00e9", "\ud800", "~", "orders", "status", "1001", "a", "-", "_",
]
QUERY_PIECES = [
    "code", "CODE", "Code", "subscription-key", "Subscription-Key", "=", "&", ";", "+", "%", "%0d%0a", "%0a",
    "%00", "%26", "%3d", "%zz", "\r\n", "\x00", "a", "b", "1", " ", "\u00e9", "top", "http://evil.example",
    "#", "?", "\udfff", "%FF", "%ED%A0%80", LISTENER,
]
CONTENT_TYPES = [
    None, "application/json", "application/json; charset=utf-8", "APPLICATION/JSON", "text/plain",
    "application/json\r\nX-Injected: 1", "application/json\nAuthorization: Bearer stolen", "application/js\u00f6n",
    "application/merge-patch+json", "application/problem+json; charset=utf-8", "multipart/form-data; boundary=x",
]
MAX = handlers.MAX_BODY_BYTES

# Segments a real caller might send (and that must arrive unchanged): half the paths are made of these.
SEGMENTS = ["orders", "status", "1001", "a b", "x~y", "caf\u00e9", "a;b=c", "a:b", "user@host", "1+1", "x&y=z", "-_."]

paths = st.lists(st.sampled_from(PATH_PIECES), max_size=8).map("".join) | st.lists(
    st.sampled_from(SEGMENTS), min_size=1, max_size=4).map("/".join)
queries = st.lists(st.sampled_from(QUERY_PIECES), max_size=8).map("".join)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=12,
)
bodies = st.one_of(
    st.just(b""),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.binary(max_size=64),
    st.integers(1, 200_000).map(lambda depth: b"[" * depth + b"]" * depth),  # deep nesting
    st.sampled_from([MAX, MAX + 1, 4 * MAX]).map(lambda size: b"1" * size),  # at and over the limit
)


def request(method: str, path: str, query: str = "", body: bytes = b"",
            content_type: str | None = None) -> func.HttpRequest:
    """As the host builds it: the route parameter decoded once, the URL as sent (encoded)."""
    encoded = quote(path, safe="/", errors="surrogatepass")  # a lone surrogate arrives as %ED%A0%80
    url = "http://localhost:7071/api/apim/" + encoded + (f"?{query}" if query else "")
    headers = {"Content-Type": content_type} if content_type is not None else {}
    return http_request(method, url, route_params={"path": path}, body=body, headers=headers)


def assert_stays_under(base: str, url: str, path: str) -> None:
    """The URL as aiohttp will send it (yarl re-parses and normalises) stays under `base`, unchanged."""
    sent, expected = URL(url), URL(base)
    assert sent.origin() == expected.origin(), url
    trailing = "/" if path.endswith("/") else ""
    assert sent.path == expected.path + "/" + path.strip("/") + trailing, url  # the caller's path, nothing resolved
    segments = sent.path.split("/")
    assert not {".", ".."} & {segment.split(";")[0] for segment in segments}, url
    assert not any(ch in sent.path for ch in "\\\r\n\x00"), url
    names = {name.lower() for name, _ in parse_qsl(sent.raw_query_string, keep_blank_values=True)}
    assert not names & {"code", "subscription-key"}, url


# --- the URL: thousands of cases, no I/O -------------------------------------------------------

@settings(PROPERTIES, max_examples=2000)
@given(path=paths, query=queries)
@example(path="orders/..;/admin", query="")
@example(path="orders", query="CODE=function-key")
def test_a_path_is_refused_or_forwarded_exactly_under_the_base(path: str, query: str) -> None:
    try:
        url = build_url(BASE, path, without_function_key(query))  # as the proxy builds it
    except BadRequest as error:
        assert error.status == 400 and error.message
        return
    assert_stays_under(BASE, url, path)


@settings(PROPERTIES, max_examples=1000)
@given(query=queries)
def test_a_query_is_refused_or_forwarded_without_keys_or_control_characters(query: str) -> None:
    try:
        forwarded = forwarded_query(without_function_key(query))  # the proxy's: the host's key is the caller's
    except BadRequest:
        return
    pairs = parse_qsl(forwarded, keep_blank_values=True)
    assert not {name.lower() for name, _ in pairs} & {"code", "subscription-key"}
    assert not any(ch in name + value for name, value in pairs for ch in "\r\n\x00")
    kept = [(n, v) for n, v in parse_qsl(query, keep_blank_values=True) if n.lower() != "code"]
    assert pairs == kept  # everything else arrives, in order


@pytest.mark.parametrize("query", ["a=%FF", "%ED%A0%80=1", "a=%C3"])
def test_a_query_that_decodes_to_invalid_unicode_is_refused_not_rewritten(query: str) -> None:
    with pytest.raises(BadRequest, match="not valid Unicode"):
        forwarded_query(query)


# --- the handler, network call stubbed: thousands of cases -----------------------------------

@pytest.fixture
async def stubbed_client(use_stack, monkeypatch) -> tuple[str, list[dict[str, Any]]]:
    """The real handler and ApimClient.call; only the network send is replaced by a recorder."""
    configured = await use_stack("reader")
    sent: list[dict[str, Any]] = []

    async def send(self: ApimClient, method: str, url: str, body: bytes | None,
                   content_type: str | None) -> ApimResponse:
        sent.append({"method": method, "url": url, "body": body, "content_type": content_type})
        return ApimResponse(status=200, body=b'{"ok": true}', content_type="application/json")

    monkeypatch.setattr(ApimClient, "_send", send)
    return configured["APIM_BASE_URL"], sent


def expected_refusal(body: bytes, content_type: str | None, method: str = "GET") -> int | None:
    """What the body and its content type alone must get: 413, 400, or None (the path decides)."""
    if not body and content_type and method in ("POST", "PUT", "PATCH") and is_json_type(content_type):
        return 400  # an empty body that says it is JSON
    if not body or not content_type:
        return 413 if len(body) > MAX else None
    if len(body) > MAX:
        return 413
    if not content_type.isascii() or "\r" in content_type or "\n" in content_type:
        return 400  # header injection, or not a media type at all
    if is_json_type(content_type):
        try:
            json.loads(body.decode("utf-8"), parse_int=str, parse_constant=float_constants_are_not_json)
        except (ValueError, RecursionError):  # UnicodeDecodeError included: JSON is UTF-8
            return 400
    return None


def is_json_type(content_type: str) -> bool:
    media_type = content_type.split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def float_constants_are_not_json(name: str) -> None:
    raise ValueError(name)


@settings(PROPERTIES, max_examples=1000)
@given(method=st.sampled_from(ALLOWED_METHODS), path=paths, query=queries, body=bodies,
       content_type=st.sampled_from(CONTENT_TYPES))
async def test_the_proxy_answers_bad_input_with_a_clear_4xx(stubbed_client, method, path, query, body,
                                                             content_type) -> None:
    base, sent = stubbed_client
    sent.clear()
    response = await proxy(request(method, path, query, body, content_type), None)
    refusal = expected_refusal(body, content_type, method)
    event(f"status {response.status_code}")
    if response.status_code == 200:
        assert refusal is None
        [call] = sent
        assert_stays_under(base, call["url"], path)
        assert call["body"] == (body or None)
        return
    assert not sent  # refused before anything was sent
    if refusal == 413:
        error_of(response, 413, "body_too_large")
    else:
        error_of(response, 400, "bad_request")


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b'{"n": ' + b"9" * 5000 + b"}", "application/json", 200),  # valid JSON, past Python's int() digit limit
    (b'{"n": NaN}', "application/json", 400),  # Python reads it; JSON (RFC 8259) has no NaN
    (b'{"op": "replace",', "application/merge-patch+json", 400),  # a +json type is JSON too
    (b'{"op": "replace"}', "application/merge-patch+json", 200),
    ('{"item": "widget"}'.encode("utf-16"), "application/json", 400),  # RFC 8259: JSON is UTF-8 only
    ('{"item": "widget"}'.encode("utf-32-le"), "application/json", 400),
    ('{"item": "widget"}'.encode("utf-8-sig"), "application/json", 400),
    ('{"item": "widgét"}'.encode(), "application/json", 200),
])
async def test_json_bodies_are_checked_as_json_not_as_python(stubbed_client, body, content_type, status):
    _, sent = stubbed_client
    response = await proxy(request("POST", "orders", body=body, content_type=content_type), None)
    assert response.status_code == status
    assert len(sent) == (1 if status == 200 else 0)


def test_only_the_five_methods_reach_the_proxy_and_only_get_reaches_health():
    trigger = json.loads(INDEXED["apim_proxy"].get_function_json())["bindings"][0]
    assert sorted(trigger["methods"]) == sorted(ALLOWED_METHODS)
    health = json.loads(INDEXED["apim_health"].get_function_json())["bindings"][0]
    assert health["methods"] == ["GET"]


@PROPERTIES
@given(method=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=10))
def test_no_other_method_is_routed(method: str) -> None:
    trigger = json.loads(INDEXED["apim_proxy"].get_function_json())["bindings"][0]
    assert (method in trigger["methods"]) == (method in ALLOWED_METHODS)


# --- the real chain: a few hundred cases, with a second listener --------------------------------

ORDER = json.dumps({"item": "widget", "quantity": 1}).encode()
OUR_REFUSALS = ("bad_request", "body_too_large")


@pytest.fixture
async def e2e(use_stack, control, listener) -> tuple[Listener, Any]:
    await use_stack("reader")
    return listener, control


@settings(PROPERTIES, max_examples=300)
@given(method=st.sampled_from(["GET", "POST"]), path=paths, query=queries,
       body=st.sampled_from([ORDER, b"{", b"[]", b'{"item": ""}']))
@example(method="GET", path=f"//{LISTENER}/x", query="", body=b"")
@example(method="GET", path=f"http://{LISTENER}/x", query="", body=b"")
@example(method="GET", path=f"\\\\{LISTENER}\\x", query="", body=b"")
@example(method="GET", path=f"%2f%2f{LISTENER}", query="", body=b"")
@example(method="GET", path=f"status/..%2f..%2f..%2f{LISTENER}", query="", body=b"")
@example(method="GET", path="status", query=f"url=http://{LISTENER}/", body=b"")
async def test_end_to_end_the_token_only_goes_to_apim(e2e, method, path, query, body) -> None:
    listener, control = e2e
    path, query = path.replace(LISTENER, listener.host), query.replace(LISTENER, listener.host)
    before = control.stats().get("apim", {}).get("requests", 0)
    content_type = "application/json" if method == "POST" else None
    response = await proxy(request(method, path, query, body if method == "POST" else b"", content_type),
                           invocation_context())
    stats = control.stats()
    after = stats.get("apim", {}).get("requests", 0)
    assert response.status_code < 500, response.get_body()
    answer = json.loads(response.get_body() or b"null")
    refused_here = isinstance(answer, dict) and answer.get("error", {}).get("code") in OUR_REFUSALS
    event("refused here" if refused_here else f"forwarded, APIM answered {response.status_code}")
    if refused_here:
        error_of(response, 400)
        assert after == before  # nothing went anywhere
    else:
        assert after == before + 1  # forwarded once, to APIM (APIM's own 4xx, or the API's answer)
    assert stats.get("identity", {}).get("token_requests", 0) <= 2  # reader and writer, one token each
    assert listener.seen == []


async def test_a_redirect_from_upstream_is_not_followed(use_stack, listener):
    # azure-core's transport never follows redirects, so a 3xx (from a compromised or
    # misconfigured upstream) cannot carry the token or the key elsewhere: the caller gets it.
    apim = Listener(redirect_to=f"http://{listener.host}/stolen")
    await apim.start()
    try:
        await use_stack("reader", APIM_BASE_URL=f"http://{apim.host}/orders")
        response = await proxy(request("GET", "status"), invocation_context())
        assert response.status_code == 302
        assert response.headers["Location"] == f"http://{listener.host}/stolen"
        assert [s["authorization"].split(" ")[0] for s in apim.seen] == ["Bearer"]
        assert listener.seen == []
    finally:
        await apim.stop()


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH"])
async def test_an_empty_json_body_is_a_400_that_says_it_is_empty(stubbed_client, method):
    _, sent = stubbed_client
    response = await proxy(request(method, "orders", body=b"", content_type="application/json"), None)
    error = error_of(response, 400, "bad_request")
    assert "empty" in error["message"]
    assert not sent


async def test_a_get_with_a_json_content_type_and_no_body_is_forwarded(stubbed_client):
    _, sent = stubbed_client
    response = await proxy(request("GET", "orders", body=b"", content_type="application/json"), None)
    assert response.status_code == 200 and len(sent) == 1
