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
from .runtime import get_runtime
from .settings import Settings, check_connection_name

if TYPE_CHECKING:
    import azure.functions as func

__all__ = ["ApiConnection", "api"]


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

        Telemetry is set up on the first call, as for the blueprint's triggers. Pass the
        invocation's `context` so the call's spans join the invocation's trace; without it
        they join whatever span is current.
        """
        with telemetry.invocation(context):
            client = get_runtime(self.name).client
            return await client.call(method, path, query=query, body=body, content_type=content_type)

    def __repr__(self) -> str:
        return f"api({self.name!r})"


def api(name: str | None = None) -> ApiConnection:
    """The API connection `name` (settings `<NAME>_APIM_BASE_URL`, …); None is the default (`APIM_BASE_URL`, …)."""
    return ApiConnection(name)
