"""Path and query safety: the URL can never leave APIM_BASE_URL, and the function key never leaves."""

from __future__ import annotations

import random
from collections.abc import Callable
from urllib.parse import quote

import pytest

from shared import paths
from shared.errors import BadRequest
from shared.paths import MAX_PATH_LENGTH, build_url, encoded_path

BASE = "https://contoso.azure-api.net/orders"


@pytest.mark.parametrize(("path", "query", "expected"), [
    ("status", "", f"{BASE}/status"),
    ("orders/42", "", f"{BASE}/orders/42"),
    ("/orders/42/", "", f"{BASE}/orders/42/"),  # a trailing slash kept: to some APIs it is another resource
    ("orders//", "", f"{BASE}/orders/"),
    ("orders", "top=5&skip=10", f"{BASE}/orders?top=5&skip=10"),
    ("orders", "code=ABC-42&top=5", f"{BASE}/orders?code=ABC-42&top=5"),  # the API's own: the proxy drops the key
    ("orders/a b", "", f"{BASE}/orders/a%20b"),
    ("orders/x?y", "", f"{BASE}/orders/x%3Fy"),
    ("orders/x#y", "", f"{BASE}/orders/x%23y"),
    ("orders", "q=a%20b&q=c", f"{BASE}/orders?q=a%20b&q=c"),
    # The query as it came, field by field: not parsed and encoded again.
    ("orders", "flag", f"{BASE}/orders?flag"),
    ("orders", "$count=true&$filter=a+eq+1", f"{BASE}/orders?$count=true&$filter=a+eq+1"),
    ("orders", "a=1;b=2", f"{BASE}/orders?a=1;b=2"),
    ("orders", "q=é&r={x}", f"{BASE}/orders?q=%C3%A9&r=%7Bx%7D"),  # what a query cannot hold, encoded
    ("orders", "a=1#b", f"{BASE}/orders?a=1%23b"),  # a raw '#' would end the query
    ("orders", "off=100%&x=%zz&y=%4", f"{BASE}/orders?off=100%25&x=%25zz&y=%254"),  # '%' starting no escape
])
def test_good_paths(path, query, expected):
    assert build_url(BASE, path, query) == expected


@pytest.mark.parametrize(("query", "forwarded"), [
    ("code=function-key&top=5", "top=5"), ("flag&CODE=function-key&x=", "flag&x="), ("co%64e=key&a=1", "a=1"),
    ("a=1&&code=k&b", "a=1&&b"), ("codes=1&code", "codes=1"), ("", ""),
])
def test_the_proxy_drops_the_hosts_function_key_in_any_case_or_encoding_and_nothing_else(query, forwarded):
    assert paths.without_function_key(query) == forwarded


@pytest.mark.parametrize("path", [
    "..", "../admin", "orders/../../admin", "./status", "orders/./x",
    "%2e%2e/admin", "orders%2f..%2fadmin", "orders/%252e%252e",
    "//evil.example/x", "https://evil.example/x", "http:evil.example", "orders//x",
    "orders\\..\\admin", "\\\\evil.example\\x",
    "orders\r\nX-Injected: 1", "orders\x00", "",  "/", "a" * 3000,
])
def test_bad_paths_are_refused(path):
    with pytest.raises(BadRequest):
        build_url(BASE, path)


@pytest.mark.parametrize("query", ["a=%0d%0aX-Injected:%201", "a=1\r\nb", "subscription-key=abc"])
def test_bad_queries_are_refused(query):
    with pytest.raises(BadRequest):
        build_url(BASE, "orders", query)


def test_the_plain_path_shortcut_answers_as_the_full_checks_do():
    """Paths that skip the segment-by-segment checks come out as those checks would make them."""
    alphabet = ["a", "Z", "0", ".", "..", ";", ":", "/", "//", "%", "~", "@", "-", "_", " ", "\\", "é", "\x00", "?",
                "'", "!", "$", "&", "(", ")", "*", "+", ",", "=", "\n", "\u0661", "\u212a", "#", "[", "\ud800"]
    generator = random.Random(20261201)
    shortcut = 0
    for _ in range(5000):
        path = "".join(generator.choice(alphabet) for _ in range(generator.randint(1, 8)))
        if paths._PLAIN_PATH.fullmatch(path):
            shortcut += 1
        assert answer(encoded_path, path) == answer(full_checks, path), path
    assert shortcut > 500  # the shortcut was taken often enough for the comparison to mean something
    for length in (MAX_PATH_LENGTH - 1, MAX_PATH_LENGTH, MAX_PATH_LENGTH + 1):
        for path in ("a" * length, ("ab/" * length)[:length], "/" + "a" * (length - 1)):
            assert answer(encoded_path, path) == answer(full_checks, path), len(path)


def full_checks(path: str) -> str:
    segments = paths._safe_segments(path, "APIM_BASE_URL", "/api/apim")
    return "/".join(quote(segment, safe=paths._SEGMENT_SAFE) for segment in segments) + "/" * path.endswith("/")


def answer(build: Callable[[str], str], path: str) -> str:
    try:
        return build(path)
    except BadRequest as refused:
        return f"refused: {refused}"
