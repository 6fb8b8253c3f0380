"""A network delay model for the APIM stand-in, and the connection counts it sees.

On loopback a round trip to the gateway takes about a millisecond and a new
connection costs next to nothing, so what an app saves by reusing connections
and tokens cannot show. This is a model, not a network: before handling a
request the stand-in waits `rtt_ms` (one round trip), plus `connection_ms` on
the first request of a new connection (the TCP and TLS handshakes a real
client waits for: two round trips for TCP and TLS 1.3). Set it with
`PUT {control_url}/network {"rtt_ms": 10, "connection_ms": 20}` or
`python -m devstack up --rtt-ms 10 --connection-ms 20`.

`POST {control_url}/reset` goes back to the model the stack was started with.

Counted in `/stats` under `apim`: `connections` (new connections that sent a
request) and `tls_handshakes` (those of them over TLS).
"""

from __future__ import annotations

import asyncio
import json
import weakref
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devstack.state import StackState

_KEY = "network"


@dataclass
class NetworkModel:
    rtt_ms: float = 0.0
    connection_ms: float = 0.0
    # What the stack was started with (`configure`, from the command line): the values POST /reset restores.
    configured: tuple[float, float] = field(default=(0.0, 0.0), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.configured = (self.rtt_ms, self.connection_ms)

    def update(self, document: Any) -> None:
        if not isinstance(document, dict) or not set(document) <= {"rtt_ms", "connection_ms"}:
            raise ValueError('expected {"rtt_ms": number, "connection_ms": number}')
        values = {name: document.get(name, getattr(self, name)) for name in ("rtt_ms", "connection_ms")}
        for name, value in values.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 10_000:
                raise ValueError(f"{name} must be a number of milliseconds from 0 to 10000")
        self.rtt_ms, self.connection_ms = float(values["rtt_ms"]), float(values["connection_ms"])

    def configure(self, document: Any) -> None:
        """Set the model and remember it as the stack's own, which `reset` goes back to."""
        self.update(document)
        self.configured = (self.rtt_ms, self.connection_ms)

    def reset(self) -> None:
        self.rtt_ms, self.connection_ms = self.configured

    def document(self) -> dict[str, float]:
        return {"rtt_ms": self.rtt_ms, "connection_ms": self.connection_ms}


def network_model(state: StackState) -> NetworkModel:
    model = state.extras.get(_KEY)
    if model is None:
        model = state.extras[_KEY] = NetworkModel()
    return model


def network_middleware(state: StackState) -> Any:
    model = network_model(state)
    seen: weakref.WeakSet[Any] = weakref.WeakSet()  # one entry per open connection

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        delay_ms = model.rtt_ms
        transport = request.transport
        if transport is not None and transport not in seen:
            seen.add(transport)
            state.stats.count("apim", "connections")
            if transport.get_extra_info("ssl_object") is not None:
                state.stats.count("apim", "tls_handshakes")
            delay_ms += model.connection_ms
        if delay_ms:
            await asyncio.sleep(delay_ms / 1000)
        return await handler(request)

    return middleware


def add_control_routes(app: web.Application, state: StackState) -> None:
    async def get_network(request: web.Request) -> web.Response:
        return web.json_response(network_model(state).document())

    async def put_network(request: web.Request) -> web.Response:
        model = network_model(state)
        try:
            model.update(await request.json())
        except (json.JSONDecodeError, ValueError) as exc:
            return web.json_response({"error": f"bad network model: {exc}"}, status=400)
        return web.json_response(model.document())

    app.router.add_get("/network", get_network)
    app.router.add_put("/network", put_network)
