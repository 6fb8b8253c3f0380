"""Fault injection: the next N requests to a service fail the way asked.

A fault is set with `POST {control_url}/faults` and applied by `fault_middleware`
on every stand-in service, before the service's own handler runs.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass
from typing import Any

from aiohttp import web

SERVICES = ("identity", "apim", "backend", "ingestion")


class FaultSpecError(ValueError):
    """A fault request body that cannot be applied."""


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
        if not isinstance(fault.times, int) or fault.times < 1:
            raise FaultSpecError("'times' must be a positive integer")
        if fault.status is not None and not (isinstance(fault.status, int) and 100 <= fault.status <= 599):
            raise FaultSpecError("'status' must be an HTTP status code")
        if fault.method:
            fault.method = fault.method.upper()
        return fault

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


def fault_middleware(service: str, board: FaultBoard, error_body: Any = None) -> Any:
    """aiohttp middleware that applies the pending fault (if any) for `service`."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        fault = board.take(service, request.method)
        if fault is None:
            return await handler(request)
        if fault.delay_ms:
            await asyncio.sleep(fault.delay_ms / 1000)
        if fault.drop_connection:
            return await _drop(request)
        if fault.status is None and not fault.malformed_body:
            return await handler(request)  # a pure delay
        status = fault.status or 200
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
        if fault.malformed_body:
            return web.Response(status=status, headers=headers, text='{"malformed": ',
                                content_type="application/json")
        body = error_body(status) if error_body else {"error": {"code": "InjectedFault", "message": "Injected fault"}}
        return web.Response(status=status, headers=headers, text=json.dumps(body),
                            content_type="application/json")

    return middleware


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
