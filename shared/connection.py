"""The public surface for your own functions: `await api("inventory").call("GET", "/items")`.

A connection is one API behind APIM with its own settings (see `settings`); `api()`
with no name is the default one. Each call returns the API's answer as an
`ApimResponse` or raises one of the typed errors of `errors` (every one an `AppError`,
with the status and JSON body a caller should see).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import telemetry
from .apim import ApimResponse
from .errors import BadRequest
from .runtime import get_runtime
from .settings import Settings, check_connection_name

if TYPE_CHECKING:
    import azure.functions as func

__all__ = ["METHODS", "ApiConnection", "api"]


class ApiConnection:
    """One API connection; cheap to create, its runtime is built on the first call."""

    def __init__(self, name: str | None = None) -> None:
        self.name = check_connection_name(name)

    @property
    def settings(self) -> Settings:
        """The connection's validated settings; raises ConfigurationError naming each bad one."""
        return get_runtime(self.name).settings

    async def call(self, method: str, path: str, *, query: str = "", body: bytes | None = None,
                   content_type: str | None = None, context: func.Context | None = None) -> ApimResponse:
        """Send `method` to `path` under the connection's APIM_BASE_URL, with its identity's token and key.

        `path` may carry its query ("/items?top=10"), or give it as `query`; a method or a
        path that cannot be sent raises BadRequest. Telemetry is set up on the first call, as
        for the blueprint's triggers. Pass the
        invocation's `context` so the call's spans join the invocation's trace; without it
        they join whatever span is current.
        """
        method = _method(method)
        if "?" in path:  # as TIMER_API_PATH reads it: "/items?top=10"
            if query:
                raise BadRequest("The path has a query ('?') and query= is given too: pass the query once.")
            path, _, query = path.partition("?")
        with telemetry.invocation(context):
            client = get_runtime(self.name).client
            return await client.call(method, path, query=query, body=body, content_type=content_type)

    def __repr__(self) -> str:
        return f"api({self.name!r})"


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _method(method: str) -> str:
    upper = method.upper() if isinstance(method, str) else ""
    if upper not in METHODS:
        raise BadRequest(f"Unsupported HTTP method {method!r}: use one of {', '.join(METHODS)}.")
    return upper


def api(name: str | None = None) -> ApiConnection:
    """The API connection `name` (settings `<NAME>_APIM_BASE_URL`, …); None is the default (`APIM_BASE_URL`, …)."""
    return ApiConnection(name)
