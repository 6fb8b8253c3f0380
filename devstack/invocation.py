"""Invoke the app's functions in-process, with the objects the Python worker builds.

One place for what tests, benchmarks, the demo and the host stand-in each need: the
app's function metadata as the worker indexes it (`app.get_functions()`), an
`HttpRequest` as the worker converts the host's request, a `Context` carrying the
invocation's W3C trace context, a `TimerRequest` as the host's timer binding sends
it, and the call itself (arguments by binding name, `context` when the function
declares it).
"""

from __future__ import annotations

import functools
import importlib
import inspect
import json
import secrets
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import azure.functions as func
from azure.functions import _abc as functions_abc  # the abstract types the worker implements
from azure.functions.http import HttpResponseConverter
from azure.functions.timer import TimerRequest

from devstack.routes import DEFAULT_ROUTE_PREFIX, RouteTemplate, decode_path

APP_MODULE = "function_app"
LOCAL_BASE_URL = "http://localhost:7071"  # where `func start` serves, the URL tests put in requests
ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")
_PATH_SAFE = "/%:@!$&'()*+,;="  # characters a path keeps unencoded; '%' so that a kept %2F stays as it came
# Hop-by-hop and framing headers are the server's business, not the function's.
_NOT_FORWARDED = {"content-length", "transfer-encoding", "connection", "keep-alive"}


# ---------------------------------------------------------------- the worker's context objects


class TraceContext(functions_abc.TraceContext):
    """The invocation's W3C trace context, as the host passes it to the worker."""

    def __init__(self, trace_parent: str, trace_state: str = "", attributes: Mapping[str, str] | None = None) -> None:
        self._trace_parent = trace_parent
        self._trace_state = trace_state
        self._attributes = dict(attributes or {})

    @property
    def trace_parent(self) -> str:
        return self._trace_parent

    @property
    def trace_state(self) -> str:
        return self._trace_state

    @property
    def attributes(self) -> dict[str, str]:
        return self._attributes

    @property
    def trace_id(self) -> str:
        return self._trace_parent.split("-")[1]


class RetryContext(functions_abc.RetryContext):
    """Which attempt this is under the function's retry policy (the first: 0)."""

    def __init__(self, retry_count: int = 0, max_retry_count: int = 0) -> None:
        self._retry_count = retry_count
        self._max_retry_count = max_retry_count

    @property
    def retry_count(self) -> int:
        return self._retry_count

    @property
    def max_retry_count(self) -> int:
        return self._max_retry_count

    @property
    def exception(self) -> Any:
        return None


class InvocationContext(func.Context):
    """What the worker passes as `context`."""

    def __init__(self, function_name: str, trace_context: TraceContext, *, function_directory: str = "",
                 retry_context: RetryContext | None = None, invocation_id: str | None = None) -> None:
        self._function_name = function_name
        self._trace_context = trace_context
        self._function_directory = function_directory
        self._retry_context = retry_context or RetryContext()
        self._invocation_id = invocation_id or str(uuid.uuid4())
        self._thread_local_storage = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> TraceContext:
        return self._trace_context

    @property
    def retry_context(self) -> RetryContext:
        return self._retry_context

    @property
    def thread_local_storage(self) -> Any:
        return self._thread_local_storage

    @property
    def trace_id(self) -> str:
        """The W3C trace ID of this invocation: App Insights' `operation_Id` for its telemetry."""
        return self._trace_context.trace_id


def trace_parent(trace_id: str | None = None) -> str:
    """A W3C `traceparent` with a fresh span ID (and trace ID unless given), sampled."""
    return f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def invocation_context(function_name: str = "apim_proxy", *, parent: str | None = None,
                       trace_state: str = "") -> InvocationContext:
    """A context as the host creates one per invocation.

    With `parent` (a caller's `traceparent` header) the invocation joins the caller's
    trace as a child span, as the host's request activity does; without, a new trace.
    """
    trace_id = _trace_id_of(parent) if parent else None
    flags = parent.split("-")[3] if trace_id and parent else "01"
    traceparent = f"00-{trace_id or secrets.token_hex(16)}-{secrets.token_hex(8)}-{flags}"
    return InvocationContext(function_name, TraceContext(traceparent, trace_state if trace_id else ""))


def _trace_id_of(traceparent: str) -> str | None:
    """The trace ID of a valid W3C traceparent (version 00), else None (the host then starts a new trace)."""
    parts = traceparent.strip().split("-")
    if len(parts) != 4 or parts[0] != "00" or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    return None if set(parts[1]) == {"0"} or set(parts[2]) == {"0"} else parts[1]


# ---------------------------------------------------------------- requests as the worker builds them


def http_request(method: str, url: str, *, headers: Mapping[str, str] | None = None, body: bytes = b"",
                 route_params: Mapping[str, str] | None = None) -> func.HttpRequest:
    """The `HttpRequest` the worker hands a function for a request to `url`.

    As the host sends it: header names lower-cased, the query as a map (repeated names
    joined with ',', empty values left out), the route values, and the body only when
    the request declared a length.
    """
    query: dict[str, list[str]] = {}
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        query.setdefault(name, []).append(value)
    params = {name: ",".join(values) for name, values in query.items() if any(values)}
    return func.HttpRequest(method=method.upper(), url=url, headers={k.lower(): v for k, v in (headers or {}).items()},
                            params=params, route_params=dict(route_params or {}), body=body)


def proxy_request(method: str, path: str, *, query: str = "", body: bytes = b"",
                  headers: Mapping[str, str] | None = None, base_url: str = LOCAL_BASE_URL) -> func.HttpRequest:
    """The request for `/api/apim/<path>` (the proxy's route), `path` being the decoded route value."""
    url = f"{base_url}/api/apim/{path}" + (f"?{query}" if query else "")
    return http_request(method, url, headers=headers, body=body, route_params={"path": path} if path else {})


def timer_request(*, past_due: bool = False, now: datetime | None = None) -> TimerRequest:
    """The `TimerRequest` of one run, with the schedule status the host's timer binding sends."""
    stamp = (now or datetime.now(UTC)).isoformat()
    return TimerRequest(past_due=past_due, schedule_status={"Last": stamp, "Next": stamp, "LastUpdated": stamp},
                        schedule={"AdjustForDST": True})


# ---------------------------------------------------------------- the app's functions


@dataclass(frozen=True)
class AppFunction:
    """One indexed function: its name, trigger and, for HTTP, route, methods and auth level."""

    name: str
    trigger_type: str
    trigger_name: str
    user_function: Callable[..., Any]
    bindings: tuple[dict[str, Any], ...]
    route: RouteTemplate | None = None
    methods: tuple[str, ...] = ()
    auth_level: str = "function"
    wants_context: bool = False
    indexed: Any = field(default=None, repr=False, compare=False)  # the entry of app.get_functions()

    @property
    def is_http(self) -> bool:
        return self.trigger_type == "httpTrigger"

    async def invoke(self, trigger_value: Any, context: func.Context | None) -> Any:
        """Call the function as the worker does: the trigger by its binding name, `context` if declared."""
        kwargs = {self.trigger_name: trigger_value}
        if self.wants_context:
            kwargs["context"] = context
        result = self.user_function(**kwargs)
        return await result if inspect.isawaitable(result) else result


def describe(function: Any) -> AppFunction:
    """An `AppFunction` from one entry of `app.get_functions()` (its function.json bindings)."""
    document = json.loads(function.get_function_json())
    bindings = tuple(document.get("bindings", []))
    trigger = next(b for b in bindings if b.get("type", "").lower().endswith("trigger"))
    user_function = function.get_user_function()
    name = function.get_function_name()
    wants_context = "context" in inspect.signature(user_function).parameters
    if trigger["type"] != "httpTrigger":
        return AppFunction(name=name, trigger_type=trigger["type"], trigger_name=trigger["name"],
                           user_function=user_function, bindings=bindings, wants_context=wants_context,
                           indexed=function)
    methods = tuple(m.upper() for m in trigger.get("methods") or ALL_METHODS)
    return AppFunction(name=name, trigger_type="httpTrigger", trigger_name=trigger["name"],
                       user_function=user_function, bindings=bindings,
                       route=RouteTemplate.parse(trigger.get("route") or name), methods=methods,
                       auth_level=str(trigger.get("authLevel", "function")).lower(), wants_context=wants_context,
                       indexed=function)


def app_functions(module: str = APP_MODULE) -> dict[str, AppFunction]:
    """The app's functions by name, indexed once per process as the worker does (the app refuses a second
    `get_functions()`). Call it after the app settings are in the environment, as the host imports the app."""
    return _index(module)


@functools.cache  # keyed by the module name alone: every caller shares the one indexing
def _index(module: str) -> dict[str, AppFunction]:
    app = importlib.import_module(module).app
    return {f.get_function_name(): describe(f) for f in app.get_functions()}


def indexed_functions(module: str = APP_MODULE) -> dict[str, Any]:
    """The entries of `app.get_functions()` by name (function.json, settings), from the one indexing."""
    return {name: f.indexed for name, f in app_functions(module).items()}


def user_functions(module: str = APP_MODULE) -> dict[str, Callable[..., Awaitable[Any]]]:
    """The user functions by name, for tests that call them directly."""
    return {name: f.user_function for name, f in app_functions(module).items()}


def find_http_function(functions: Mapping[str, AppFunction], path: str) -> tuple[AppFunction, dict[str, str]] | None:
    """The HTTP function whose route matches `path` (decoded, without the prefix), with its route values.

    Literal routes win over parameterised ones, as in the host's router.
    """
    candidates = []
    for function in functions.values():
        if function.route is not None and (values := function.route.match(path)) is not None:
            literals = sum(s.literal is not None for s in function.route.segments)
            candidates.append((-literals, function.name, function, values))
    if not candidates:
        return None
    _, _, function, values = min(candidates, key=lambda c: (c[0], c[1]))
    return function, values


@dataclass(frozen=True)
class Route:
    """What the host's router found for a request: the function, its route values, the decoded path."""

    function: AppFunction
    values: dict[str, str]
    path: str


def resolve(functions: Mapping[str, AppFunction], raw_path: str, method: str,
            prefix: str = DEFAULT_ROUTE_PREFIX) -> Route | None:
    """The route the host takes for `method raw_path` (as sent, still encoded), or None: the host's 404.

    A path outside the prefix, a path no route matches, or a method the function does not
    accept all find no route, as in the host's router.
    """
    path = decode_path(raw_path.split("?", 1)[0])
    if prefix:
        head, _, path_in_prefix = path.lstrip("/").partition("/")
        if head.lower() != prefix.lower():
            return None
    else:
        path_in_prefix = path
    found = find_http_function(functions, path_in_prefix)
    if found is None or method.upper() not in found[0].methods:
        return None
    return Route(function=found[0], values=found[1], path=path)


def request_url(origin: str, path: str, query_string: str = "") -> str:
    """The URL the worker sees: the decoded path encoded again (`%2F` as sent) and the query as sent."""
    return f"{origin}{quote(path, safe=_PATH_SAFE)}" + (f"?{query_string}" if query_string else "")


@dataclass(frozen=True)
class ResponseParts:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


def response_parts(result: Any) -> ResponseParts:
    """What the host sends for a function's return value, converted by the worker's own converter.

    None (no response set) is the host's bare 200; anything but an HttpResponse or str is a TypeError,
    which the host answers with 500.
    """
    if result is None:
        return ResponseParts(200, [], b"")
    if not isinstance(result, (func.HttpResponse, str)):
        raise TypeError(f"the function returned {type(result).__name__}, not an HttpResponse or str")
    datum = HttpResponseConverter.encode(result, expected_type=None)
    if datum.type == "string":
        return ResponseParts(200, [("content-type", "text/plain; charset=utf-8")], str(datum.value).encode())
    value = datum.value
    headers = [(name, header.value) for name, header in value["headers"].items()
               if name.lower() not in _NOT_FORWARDED]
    for cookie in value.get("cookies") or []:
        headers.extend(("Set-Cookie", morsel.OutputString()) for morsel in cookie.values())
    return ResponseParts(int(value["status_code"].value), headers, value["body"].value or b"")


def functions_with_trigger(functions: Mapping[str, AppFunction], trigger_type: str) -> list[AppFunction]:
    return [f for f in functions.values() if f.trigger_type == trigger_type]
