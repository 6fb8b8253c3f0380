"""The small interface the scenarios are written against, and its two implementations.

- `InProcessDriver`: the functions called in this process, with the objects the worker
  builds (`devstack.invocation`), routed as the host routes; no keys, no HTTP.
- `HttpDriver`: a function app over HTTP: the host stand-in, `func start`, or a
  deployment (a `Target` says which, with its keys and where its telemetry goes).

A driver that cannot do something a scenario needs says why (`cannot`), and the
scenario skips with that reason.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp
from yarl import URL

from devstack.invocation import (
    LOCAL_BASE_URL,
    AppFunction,
    http_request,
    invocation_context,
    request_url,
    resolve,
    response_parts,
    timer_request,
)
from tests.scenarios.evidence import Evidence
from tests.scenarios.targets import Target

logger = logging.getLogger(__name__)

# Which key a call presents.
FUNCTION_KEY, MASTER_KEY, NO_KEY, WRONG_KEY = "function", "master", "none", "wrong"
# What a scenario may need that a target may lack.
KEYS, ADMIN, TELEMETRY, WRITE_REFUSAL = "keys", "admin", "telemetry", "write refusal"
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=120)  # a cold Flex Consumption app can take a while


@dataclass(frozen=True)
class FunctionInfo:
    """A function as the target lists it."""

    name: str
    trigger: str
    route: str | None = None
    methods: tuple[str, ...] = ()


@dataclass(frozen=True)
class Reply:
    status: int
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)

    def error(self) -> dict[str, Any]:
        """The app's typed error (`{"error": {...}}`), or {} when the body is not one."""
        try:
            document = self.json()
        except ValueError:
            return {}
        return document.get("error", {}) if isinstance(document, dict) else {}

    def __str__(self) -> str:
        text = self.body[:300].decode("utf-8", "replace")
        return f"HTTP {self.status} {text!r}"


class Driver(Protocol):
    name: str
    evidence: Evidence | None
    audiences: tuple[str, ...]
    read_role: str
    write_role: str

    async def functions(self) -> list[FunctionInfo]: ...

    async def call(self, method: str, path: str, *, query: str = "", body: bytes | None = None,
                   headers: Mapping[str, str] | None = None, key: str = FUNCTION_KEY,
                   trace_id: str | None = None) -> Reply:
        """`method /<prefix>/<path>?<query>`; `path` and `query` go on the wire as given (already encoded)."""
        ...

    async def run(self, function_name: str) -> Reply:
        """Run a non-HTTP function once through the admin endpoint (or its in-process equivalent)."""
        ...

    def cannot(self, need: str) -> str | None:
        """Why this target cannot do `need` (KEYS, ADMIN, TELEMETRY, WRITE_REFUSAL), or None if it can."""
        ...

    async def close(self) -> None: ...


def traceparent(trace_id: str) -> str:
    return f"00-{trace_id}-{secrets.token_hex(8)}-01"


# ---------------------------------------------------------------- in-process


class InProcessDriver:
    """The app's functions called directly, routed and converted as the host and worker do."""

    name = "in-process"

    def __init__(self, functions: Mapping[str, AppFunction], *, audiences: tuple[str, ...], read_role: str,
                 write_role: str, evidence: Evidence | None, writes_refused: bool = False,
                 route_prefix: str = "api") -> None:
        self._functions = functions
        self.audiences, self.read_role, self.write_role = audiences, read_role, write_role
        self.evidence = evidence
        self.writes_refused = writes_refused
        self._prefix = route_prefix

    async def functions(self) -> list[FunctionInfo]:
        return [FunctionInfo(f.name, f.trigger_type, f.route.template if f.route else None, f.methods)
                for f in self._functions.values()]

    async def call(self, method: str, path: str, *, query: str = "", body: bytes | None = None,
                   headers: Mapping[str, str] | None = None, key: str = FUNCTION_KEY,
                   trace_id: str | None = None) -> Reply:
        route = resolve(self._functions, f"/{self._prefix}/{path}", method, self._prefix)
        if route is None:
            return Reply(404)
        sent = dict(headers or {})
        if body:
            sent["Content-Length"] = str(len(body))
        parent = traceparent(trace_id) if trace_id else None
        request = http_request(method, request_url(LOCAL_BASE_URL, route.path, query), headers=sent,
                               body=body or b"", route_params=route.values)
        context = invocation_context(route.function.name, parent=parent)
        try:
            parts = response_parts(await route.function.invoke(request, context))
        except Exception as exc:  # the host's bare 500
            logger.error("in-process invocation of %s failed: %s", route.function.name, type(exc).__name__)
            return Reply(500)
        return Reply(parts.status, {name.lower(): value for name, value in parts.headers}, parts.body)

    async def run(self, function_name: str) -> Reply:
        function = self._functions.get(function_name)
        if function is None:
            return Reply(404)
        try:
            await function.invoke(timer_request(), invocation_context(function.name))
        except Exception as exc:  # a failed run still was accepted; the evidence shows how it ended
            logger.error("in-process run of %s failed: %s", function_name, type(exc).__name__)
        return Reply(202)

    def cannot(self, need: str) -> str | None:
        if need == KEYS:
            return "in-process calls have no host in front of them: keys are the host's (see the HTTP targets)"
        if need == WRITE_REFUSAL and not self.writes_refused:
            return "the app is set up to write with the writer identity"
        if need == TELEMETRY and self.evidence is None:
            return "no telemetry source"
        return None

    async def close(self) -> None:
        return None


# ---------------------------------------------------------------- over HTTP


class HttpDriver:
    """A function app over HTTP, as `curl` calls it: function key as `?code=`, master key as a header."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.name = target.name
        self.evidence = target.evidence
        self.audiences, self.read_role, self.write_role = target.audiences, target.read_role, target.write_role
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            # trust_env=False: never send a function key through a proxy named by the environment.
            self._session = aiohttp.ClientSession(timeout=REQUEST_TIMEOUT, trust_env=False)
        return self._session

    def _key_headers(self, key: str) -> dict[str, str]:
        target = self.target
        if key == MASTER_KEY and target.master_key:
            return {"x-functions-key": target.master_key}
        if key == WRONG_KEY:
            return {"x-functions-key": secrets.token_urlsafe(40)}
        return {}

    def _url(self, path: str, query: str, key: str) -> URL:
        target = self.target
        pairs = [query] if query else []
        if key == FUNCTION_KEY and target.function_key:
            pairs.append(f"code={target.function_key}")  # keys are URL-safe
        prefix = f"/{target.route_prefix}" if target.route_prefix else ""
        text = f"{target.url}{prefix}/{path}" + ("?" + "&".join(pairs) if pairs else "")
        return URL(text, encoded=True)  # exactly as given: a test of what the host does with it

    async def call(self, method: str, path: str, *, query: str = "", body: bytes | None = None,
                   headers: Mapping[str, str] | None = None, key: str = FUNCTION_KEY,
                   trace_id: str | None = None) -> Reply:
        sent = {**(headers or {}), **self._key_headers(key)}
        if trace_id:
            sent["traceparent"] = traceparent(trace_id)
        async with self._client().request(method, self._url(path, query, key), data=body, headers=sent,
                                          allow_redirects=False) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read())

    async def run(self, function_name: str) -> Reply:
        url = URL(f"{self.target.url}/admin/functions/{function_name}")
        async with self._client().post(url, json={"input": ""}, headers=self._key_headers(MASTER_KEY)) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()}, await response.read())

    async def functions(self) -> list[FunctionInfo]:
        """The host's own list (`GET /admin/functions`, master key), with each function's trigger binding."""
        url = URL(f"{self.target.url}/admin/functions")
        async with self._client().get(url, headers=self._key_headers(MASTER_KEY)) as response:
            if response.status != 200:
                raise AssertionError(f"GET /admin/functions answered {response.status}: is the master key right?")
            listed = await response.json(content_type=None)
        return [_function_info(item) for item in listed]

    def cannot(self, need: str) -> str | None:
        target = self.target
        if need == KEYS and not target.keys_enforced:
            return f"{target.name} does not check function keys (Core Tools runs every function as anonymous)"
        if need == KEYS and not target.function_key:
            return "no function key was given for this target"
        if need == ADMIN and target.keys_enforced and not target.master_key:
            return "no master key was given for this target"
        if need == TELEMETRY and target.evidence is None:
            return "no telemetry source for this target (no Application Insights name or devstack control URL)"
        if need == WRITE_REFUSAL and not target.writes_refused:
            return (f"the app at this target writes with an identity that holds {target.write_role}: the refusal "
                    "needs an app whose MANAGED_IDENTITY_WRITE_CLIENT_ID lacks it")
        return None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _function_info(item: Mapping[str, Any]) -> FunctionInfo:
    bindings = item.get("config", {}).get("bindings", [])
    trigger = next((b for b in bindings if str(b.get("type", "")).lower().endswith("trigger")), {})
    kind = str(trigger.get("type", ""))
    if kind.lower() != "httptrigger":
        return FunctionInfo(item["name"], kind)
    methods = tuple(str(m).upper() for m in trigger.get("methods") or ())
    return FunctionInfo(item["name"], "httpTrigger", trigger.get("route") or item["name"], methods)
