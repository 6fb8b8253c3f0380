"""Fault injection: the next N requests to a service fail the way asked.

A fault is set with `POST {control_url}/faults` and applied by `fault_middleware`
on every stand-in service, before the service's own handler runs (so a faulted
request never changes the service's state: a faulted POST creates no order).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

SERVICES = ("identity", "apim", "backend", "ingestion")

ErrorBody = Callable[[int], Any]
RequestFilter = Callable[[web.Request], bool]


class FaultSpecError(ValueError):
    """A fault request body that cannot be applied."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a count


@dataclass
class Fault:
    service: str
    times: int = 1
    status: int | None = None
    retry_after: int | None = None
    delay_ms: int = 0
    drop_connection: bool = False
    malformed_body: bool = False
    method: str | None = None

    @classmethod
    def from_json(cls, body: Any) -> Fault:
        if not isinstance(body, dict):
            raise FaultSpecError("fault must be a JSON object")
        unknown = set(body) - set(cls.__dataclass_fields__)
        if unknown:
            raise FaultSpecError(f"unknown fault fields: {sorted(unknown)}")
        if body.get("service") not in SERVICES:
            raise FaultSpecError(f"'service' must be one of {list(SERVICES)}")
        fault = cls(**body)
        fault._validate()
        if fault.method:
            fault.method = fault.method.upper()
        return fault

    def _validate(self) -> None:
        # Checked here so that a bad spec is a 400 for the test author, not a 500 later
        # inside some unrelated request.
        if not _is_int(self.times) or self.times < 1:
            raise FaultSpecError("'times' must be a positive integer")
        if self.status is not None and not (_is_int(self.status) and 100 <= self.status <= 599):
            raise FaultSpecError("'status' must be an HTTP status code")
        if self.retry_after is not None and not (_is_int(self.retry_after) and self.retry_after >= 0):
            raise FaultSpecError("'retry_after' must be a non-negative integer (seconds)")
        if not _is_int(self.delay_ms) or self.delay_ms < 0:
            raise FaultSpecError("'delay_ms' must be a non-negative integer")
        for flag in ("drop_connection", "malformed_body"):
            if not isinstance(getattr(self, flag), bool):
                raise FaultSpecError(f"'{flag}' must be true or false")
        if self.method is not None and not (isinstance(self.method, str) and self.method.isalpha()):
            raise FaultSpecError("'method' must be an HTTP method such as \"POST\"")

    def applies_to(self, method: str) -> bool:
        return self.method is None or self.method == method.upper()


class FaultBoard:
    """Pending faults per service. Thread-safe: tests set faults from another thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def pending(self) -> list[dict[str, Any]]:
        with self._lock:
            return [vars(f).copy() for f in self._faults]

    def take(self, service: str, method: str) -> Fault | None:
        """Consume one use of the first fault that matches this request."""
        with self._lock:
            for fault in self._faults:
                if fault.service == service and fault.applies_to(method):
                    fault.times -= 1
                    if fault.times == 0:
                        self._faults.remove(fault)
                    return fault
        return None


def fault_middleware(service: str, board: FaultBoard, error_body: ErrorBody | None = None,
                     applies_to: RequestFilter | None = None) -> Any:
    """aiohttp middleware that applies the pending fault (if any) for `service`.

    `error_body(status)` shapes the JSON of an injected error the way the real
    service would; `applies_to(request)` exempts requests that must not consume a
    fault (such as background pings a client sends on its own schedule).
    """

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        if applies_to is not None and not applies_to(request):
            return await handler(request)
        fault = board.take(service, request.method)
        if fault is None:
            return await handler(request)
        if fault.delay_ms:
            # Take the body first, as a slow server has it already: aiohttp drops an unread body
            # when the client gives up, and the delayed request would then fail instead of landing late.
            if request.can_read_body:
                await request.read()
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.drop_connection:
            return await _drop(request)
        if fault.status is None and not fault.malformed_body:
            return await handler(request)  # a pure delay
        return _fault_response(fault, error_body)

    return middleware


def _fault_response(fault: Fault, error_body: ErrorBody | None) -> web.Response:
    status = fault.status or 200
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    if fault.malformed_body:
        text = '{"malformed": '  # truncated JSON, declared as JSON
    else:
        body = error_body(status) if error_body else {"error": {"code": "InjectedFault", "message": "Injected fault"}}
        text = json.dumps(body)
    return web.Response(status=status, headers=headers, text=text, content_type="application/json")


async def _drop(request: web.Request) -> web.StreamResponse:
    """Start a response, then cut the connection mid-body."""
    response = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                       "Content-Length": "1024"})
    await response.prepare(request)
    await response.write(b'{"partial": ')
    transport = request.transport
    if transport is not None:
        transport.abort()
    return response
