"""Build the APIM URL for a caller's path and query, without ever leaving APIM_BASE_URL.

The route's `{*path}` arrives already percent-decoded by the host, so anything
that still looks encoded, walks up (`..`), or could change the host
(`//evil.example`, `http:`, backslashes) is refused rather than normalised:
guessing what a crafted path meant is how proxies get turned around.
"""

from __future__ import annotations

import functools
import re
from urllib.parse import SplitResult, quote, unquote_plus, urlsplit

from .errors import BadRequest

__all__ = ["FUNCTION_KEY_PARAM", "MAX_PATH_LENGTH", "SUBSCRIPTION_KEY_PARAM", "build_url", "encoded_path",
           "forwarded_query", "without_function_key"]

# The host's function key, in the proxy's own query: the caller's key to the host, never the API's.
FUNCTION_KEY_PARAM = "code"
# Never sent: a key that would override ours.
SUBSCRIPTION_KEY_PARAM = "subscription-key"

_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_QUERY_SAFE = "-._~!$&'()*+,;=:@/?%"  # RFC 3986's query characters, and the '%' of escapes already there
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
MAX_PATH_LENGTH = 2048
# A path the checks below would pass unchanged: segments of characters that need no encoding, none of them
# empty, '.' or '..' (or '..;x'), and no ':' in the first. Most calls are such a path; they skip the
# segment-by-segment checks and quote(), which cost more than the rest of the URL's handling (benchmarks/).
_SEGMENT = rf"(?!\.\.?(?:[;/]|\Z))[A-Za-z0-9{re.escape(_SEGMENT_SAFE)}]+"
_PLAIN_PATH = re.compile(rf"(?![^/]*:){_SEGMENT}(?:/{_SEGMENT})*")


def build_url(base_url: str, path: str, query: str = "", *, base_setting: str = "APIM_BASE_URL",
              proxy_route: str | None = "/api/apim") -> str:
    """`base_url` + `/path` + `?query`, or BadRequest naming what is wrong.

    Messages name the connection's own `base_setting` and `proxy_route` (None: no route to suggest).
    """
    url = base_url.rstrip("/") + "/" + encoded_path(path, base_setting, proxy_route)
    _assert_inside(base_url, url, base_setting)
    forwarded = forwarded_query(query)
    return f"{url}?{forwarded}" if forwarded else url


def encoded_path(path: str, base_setting: str = "APIM_BASE_URL", proxy_route: str | None = "/api/apim") -> str:
    """`path` checked and percent-encoded, without its leading slashes; or BadRequest.

    A trailing slash is kept: to many APIs `items/` is not `items` (Django answers a redirect).
    """
    if len(path) <= MAX_PATH_LENGTH and _PLAIN_PATH.fullmatch(path):
        return path
    encoded = "/".join(quote(s, safe=_SEGMENT_SAFE) for s in _safe_segments(path, base_setting, proxy_route))
    return encoded + "/" if path.endswith("/") else encoded


def _safe_segments(path: str, base_setting: str, proxy_route: str | None) -> list[str]:
    if len(path) > MAX_PATH_LENGTH:
        raise BadRequest(f"The path is longer than {MAX_PATH_LENGTH} characters.")
    _require_unicode(path, "path")
    if _CONTROL.search(path):
        raise BadRequest("The path contains control characters (such as CR or LF).")
    if "\\" in path:
        raise BadRequest("The path contains a backslash.")
    if "%" in path:  # the host decoded the path once; a '%' left is encoded twice, or not encoding at all
        raise BadRequest("The path contains '%' after the host decoded it: percent-encode the path exactly once.")
    if not path.strip("/"):
        where = f"call {proxy_route}/<path under {base_setting}>, e.g. {proxy_route}/status" if proxy_route \
            else f"give a path under {base_setting}, e.g. /status"
        raise BadRequest(f"The path is empty: {where}.")
    segments = path.strip("/").split("/") if not path.startswith("//") else [""]
    for segment in segments:
        if segment == "":
            raise BadRequest("The path contains an empty segment ('//'), which could name another host.")
        # "..;x" too: servlet containers drop ";params" before resolving dot segments.
        if segment.split(";", 1)[0] in (".", ".."):
            raise BadRequest("The path contains '.' or '..' segments.")
    if ":" in segments[0]:
        raise BadRequest(f"The path looks like an absolute URL; give a path under {base_setting} instead.")
    return segments


def _assert_inside(base_url: str, url: str, base_setting: str) -> None:
    # Belt and braces: whatever the checks above missed, the result must stay under the base.
    base, target = _base_parts(base_url), urlsplit(url)
    same_origin = (base.scheme, base.netloc) == (target.scheme, target.netloc)
    if not same_origin or not target.path.startswith(base.path):
        raise BadRequest(f"The path would leave {base_setting}.")


@functools.lru_cache(maxsize=16)  # one per connection: the settings' APIM_BASE_URL, parsed once
def _base_parts(base_url: str) -> SplitResult:
    return urlsplit(base_url.rstrip("/") + "/")


def without_function_key(query: str) -> str:
    """The proxy's query without the host's function key, every other field as it came.

    The host accepts the key as `code` in any case (ASP.NET query names are case-insensitive),
    so `?CODE=<key>` authenticates too and is not passed on either.
    """
    if not query:
        return ""
    # Decoded as the host decodes it: `co%64e` is the key too. Checking each field is forwarded_query's.
    return "&".join(field for field in query.split("&")
                    if unquote_plus(field.partition("=")[0]).lower() != FUNCTION_KEY_PARAM)


def forwarded_query(query: str) -> str:
    """The query as it came; refuses control characters and our key's name.

    Field by field, never parsed and encoded again: `?flag`, `?$count` and `a=1;b=2` reach the API as
    they were sent (parse_qsl() and urlencode() would make them `flag=`, `%24count=` and `a=1%3Bb%3D2`).
    """
    if not query:
        return ""
    _require_unicode(query, "query string")
    if _CONTROL.search(query):
        raise BadRequest("The query string contains control characters (such as CR or LF).")
    # Each kept field as sent, but for characters a query cannot hold: a raw '#' would end it early,
    # and a '%' that starts no escape ("100%") is sent as the escape of itself.
    fields = query.split("&")
    for field in fields:
        _check_field(field)
    return "&".join(_STRAY_PERCENT.sub("%25", quote(field, safe=_QUERY_SAFE)) for field in fields)


def _check_field(field: str) -> None:
    """Refuses a query field whose name or value, decoded as the host decodes them, cannot be forwarded."""
    name, _, value = field.partition("=")
    try:
        # Strict: by default unquote() replaces invalid UTF-8 (%FF) with U+FFFD, and the check would miss it.
        name, value = unquote_plus(name, errors="strict"), unquote_plus(value, errors="strict")
    except UnicodeDecodeError:
        raise BadRequest("The query string contains characters that are not valid Unicode text.") from None
    if _CONTROL.search(name) or _CONTROL.search(value):
        raise BadRequest("The query string contains encoded control characters (such as %0d%0a).")
    if name.lower() == SUBSCRIPTION_KEY_PARAM:
        raise BadRequest("Do not pass 'subscription-key': the function adds its own APIM subscription key.")


def _require_unicode(text: str, what: str) -> None:
    # A lone surrogate (from a decoded %ED%A0%80, say) cannot be encoded again to send on.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BadRequest(f"The {what} contains characters that are not valid Unicode text.") from None
