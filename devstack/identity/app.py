"""The identity service's aiohttp application: routes, counters and faults."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devstack.faults import fault_middleware
from devstack.identity import app_service, discovery, imds
from devstack.state import STATE, StackState

SERVICE = "identity"
TOKEN_ENDPOINTS = {app_service.PATH: "app_service", imds.PATH: "imds"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _token_endpoint(request: web.Request) -> str | None:
    """"app_service" or "imds" for a token request, None for discovery and keys."""
    return TOKEN_ENDPOINTS.get(request.path.rstrip("/"))


def _count_token_requests(state: StackState) -> Any:
    """Count every token request. Placed before the fault middlewares, so faulted
    requests are counted too."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = _token_endpoint(request)
        if endpoint is not None:
            state.stats.count(SERVICE, "token_requests")
            state.stats.count(SERVICE, "by_endpoint", endpoint)
        return await handler(request)

    return middleware


def _faults_for(state: StackState, endpoint: str, error_body: Callable[[int], dict[str, Any]]) -> Any:
    """Identity faults hit the token endpoints only, each with its own error body:
    discovery and JWKS are what APIM reads, and a fault is meant for the token call."""
    return fault_middleware(SERVICE, state.faults, error_body=error_body,
                            applies_to=lambda request: _token_endpoint(request) == endpoint)


def create_app(state: StackState) -> web.Application:
    app = web.Application(middlewares=[
        _count_token_requests(state),
        _faults_for(state, "app_service", app_service.fault_body),
        _faults_for(state, "imds", imds.fault_body),
    ])
    app[STATE] = state
    for path in (app_service.PATH, app_service.PATH + "/"):  # Azure's own samples append "/"
        app.router.add_get(path, app_service.token, allow_head=False)
    app.router.add_get(imds.PATH, imds.token, allow_head=False)
    discovery.add_routes(app)
    return app
