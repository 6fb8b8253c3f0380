"""The triggers of one API connection, as a `func.Blueprint` any Functions app can register.

    app.register_functions(blueprint())             # the default connection: APIM_BASE_URL, …
    app.register_functions(blueprint("inventory"))  # a named one: INVENTORY_APIM_BASE_URL, …

Each HTTP route sets its own auth level (FUNCTION), so an app whose default is
ANONYMOUS cannot turn the proxy into an open door that calls the API as the
managed identity. Function names start with `apim_` and routes with `apim`, so
they do not clash with an app's own (`health`, say); a named connection adds its
name to both.
"""

from __future__ import annotations

import azure.functions as func

from . import handlers
from .redaction import redact_library_logs
from .settings import ROUTE_PREFIX, check_connection_name, routes, setting_name

__all__ = ["FUNCTION_PREFIX", "ROUTE_PREFIX", "blueprint", "function_names", "routes"]

FUNCTION_PREFIX = "apim_"
PROXY_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


def function_names(connection: str | None = None) -> dict[str, str]:
    """The function names of a connection's blueprint: proxy, health and timer."""
    name = check_connection_name(connection)
    stem = FUNCTION_PREFIX + (f"{name.lower()}_" if name else "")
    return {"proxy": f"{stem}proxy", "health": f"{stem}health", "timer": f"{stem}timer"}


def blueprint(connection: str | None = None, *, timer: bool = True) -> func.Blueprint:
    """The proxy, health and (with `timer`) scheduled call of one API connection."""
    prefix = check_connection_name(connection)
    redact_library_logs()  # from indexing on: in Azure the worker's exporter may log before the first call
    names, paths = function_names(prefix), routes(prefix)
    bp = func.Blueprint()

    @bp.function_name(names["proxy"])
    @bp.route(route=paths["proxy"], methods=PROXY_METHODS, auth_level=func.AuthLevel.FUNCTION)
    async def proxy(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        """Forward to the connection's APIM_BASE_URL/{path} with the managed identity's token and key."""
        return await handlers.forward(req, context, prefix)

    @bp.function_name(names["health"])
    @bp.route(route=paths["health"], methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
    async def health(req: func.HttpRequest, context: func.Context) -> func.HttpResponse:
        """Configuration status; `?probe=token` also shows the token's non-secret claims."""
        return await handlers.health(req, context, prefix)

    if timer:
        @bp.function_name(names["timer"])
        @bp.timer_trigger(schedule=f"%{setting_name('TIMER_SCHEDULE', prefix)}%", arg_name="timer",
                          run_on_startup=False)
        @bp.retry(strategy="exponential_backoff", max_retry_count="3",
                  minimum_interval="00:00:10", maximum_interval="00:02:00")
        async def scheduled(timer: func.TimerRequest, context: func.Context) -> None:
            """GET the connection's TIMER_API_PATH on its TIMER_SCHEDULE; a failed call fails the invocation."""
            await handlers.scheduled_call(timer, context, prefix)

    return bp
