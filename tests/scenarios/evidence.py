"""Where a scenario looks for what happened after a call: telemetry and the timer's run.

Locally the devstack's control API (the ingestion stand-in's envelopes, the backend's
request log); in Azure, Application Insights through `az monitor app-insights query`.
Both are polled for a bounded time: ingestion is asynchronous.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from tests.scenarios.cli import run_json

T = TypeVar("T")
_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_TRACE_ID = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class TelemetryItem:
    """One telemetry item of an operation, as App Insights tables show it."""

    kind: str  # "request", "dependency", "trace", "exception", ...
    name: str
    type: str
    target: str
    success: bool | None


class Evidence(Protocol):
    """What a target can tell about the calls made to it."""

    description: str
    timeout: float  # how long to wait for ingestion, in seconds
    interval: float  # how long between two looks

    def checkpoint(self) -> Any:
        """A mark to look for runs after."""

    def run_outcome(self, function_name: str, since: Any) -> str | None:
        """"succeeded" or "failed" once a run of the function after `since` shows, else None."""

    def operation(self, operation_id: str) -> list[TelemetryItem]:
        """The telemetry items of one operation (trace ID) received so far."""


async def poll(probe: Callable[[], T | None], evidence: Evidence) -> T | None:
    """`probe()` until it returns something, for at most `evidence.timeout` seconds; None if it never did."""
    deadline = time.monotonic() + evidence.timeout
    while True:
        found = probe()
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(min(evidence.interval, max(deadline - time.monotonic(), 0)))


# ---------------------------------------------------------------- the devstack's control API


_KINDS = {"RequestData": "request", "RemoteDependencyData": "dependency", "MessageData": "trace",
          "ExceptionData": "exception", "EventData": "event"}


class DevstackEvidence:
    """The control API of a running devstack: the ingestion stand-in and the backend's request log."""

    def __init__(self, control_url: str, *, timeout: float = 30.0, before_query: Callable[[], None] | None = None,
                 run_path: str = "/status") -> None:
        self.control_url = control_url
        self.timeout = timeout
        self.interval = 0.2
        self.description = f"the devstack at {control_url}"
        self._before_query = before_query
        self._run_path = run_path
        # Loopback only: an http_proxy variable must not reroute it.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _get(self, path: str) -> Any:
        with self._opener.open(self.control_url + path, timeout=10) as response:
            return json.loads(response.read())

    def checkpoint(self) -> int:
        return len(self._get("/backend/requests"))

    def run_outcome(self, function_name: str, since: Any) -> str | None:
        """The timer's GET as the backend saw it (the backend's log has no function names: any GET of the
        timer's path after the mark)."""
        if self._before_query:
            self._before_query()
        seen = [r for r in self._get("/backend/requests")[since:]
                if r["method"] == "GET" and r["path"].endswith(self._run_path) and r.get("status") is not None]
        if not seen:
            return None
        return "succeeded" if 200 <= seen[0]["status"] < 300 else "failed"

    def operation(self, operation_id: str) -> list[TelemetryItem]:
        if self._before_query:
            self._before_query()
        items = []
        for envelope in self._get("/telemetry"):
            if envelope.get("tags", {}).get("ai.operation.id") != operation_id:
                continue
            data = envelope.get("data", {})
            base = data.get("baseData", {})
            items.append(TelemetryItem(kind=_KINDS.get(data.get("baseType", ""), data.get("baseType", "")),
                                       name=str(base.get("name", "")), type=str(base.get("type", "")),
                                       target=str(base.get("target", "")), success=base.get("success")))
        return items


# ---------------------------------------------------------------- Application Insights


class AppInsightsEvidence:
    """An Application Insights resource, queried with `az monitor app-insights query` (Log Analytics)."""

    def __init__(self, app: str, resource_group: str, *, subscription: str | None = None,
                 timeout: float = 300.0) -> None:
        self.app = app
        self.resource_group = resource_group
        self.subscription = subscription
        self.timeout = timeout
        self.interval = 15.0  # each query is a round trip to Azure; ingestion takes minutes anyway
        self.description = f"Application Insights '{app}'"

    def query(self, kql: str) -> list[dict[str, Any]]:
        """Rows of the query's primary table, as dicts."""
        args = ["monitor", "app-insights", "query", "--app", self.app, "--resource-group", self.resource_group,
                "--analytics-query", kql, "--offset", "2h", "--output", "json"]
        if self.subscription:
            args += ["--subscription", self.subscription]
        result = run_json("az", args, what="query Application Insights")
        tables = result.get("tables") or []
        if not tables:
            return []
        columns = [c["name"] for c in tables[0]["columns"]]
        return [dict(zip(columns, row, strict=True)) for row in tables[0]["rows"]]

    def checkpoint(self) -> str:
        return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def run_outcome(self, function_name: str, since: Any) -> str | None:
        if not _NAME.fullmatch(function_name):
            raise ValueError(f"not a function name: {function_name!r}")
        rows = self.query(f'requests | where timestamp >= datetime({since}) '
                          f'| where name == "{function_name}" or operation_Name == "{function_name}" '
                          "| project timestamp, success, resultCode | order by timestamp asc | take 1")
        if not rows:
            return None
        return "succeeded" if _truthy(rows[0]["success"]) else "failed"

    def operation(self, operation_id: str) -> list[TelemetryItem]:
        if not _TRACE_ID.fullmatch(operation_id):
            raise ValueError(f"not a trace ID: {operation_id!r}")
        rows = self.query(f'union requests, dependencies, traces, exceptions | where operation_Id == "{operation_id}" '
                          "| project itemType, name, type, target, success")
        return [TelemetryItem(kind=str(r.get("itemType") or ""), name=str(r.get("name") or ""),
                              type=str(r.get("type") or ""), target=str(r.get("target") or ""),
                              success=None if r.get("success") is None else _truthy(r["success"])) for r in rows]


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() in ("true", "1")
