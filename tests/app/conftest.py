"""Fixtures for the function app: settings pointing at the devstack, host-like invocation."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
from azure.core.pipeline.transport import AioHttpTransport

import function_app
from devstack.appsettings import app_settings
from shared import runtime, telemetry

# The app can be indexed only once per process (as the worker does): every test module uses these.
INDEXED = {f.get_function_name(): f for f in function_app.app.get_functions()}
FUNCTIONS = {name: f.get_user_function() for name, f in INDEXED.items()}
SETTING_NAMES = ("APIM_BASE_URL", "APIM_SUBSCRIPTION_KEY", "API_APP_ID_URI", "MANAGED_IDENTITY_CLIENT_ID",
                 "MANAGED_IDENTITY_WRITE_CLIENT_ID", "AZURE_TENANT_ID", "TIMER_API_PATH", "TIMER_SCHEDULE",
                 "IDENTITY_ENDPOINT", "IDENTITY_HEADER")


@pytest.fixture(scope="session", autouse=True)
def telemetry_to_devstack(endpoints: dict[str, Any]) -> Iterator[None]:
    """Configure export once for the run, to the ingestion stand-in, as the app does in Azure."""
    saved = dict(os.environ)
    os.environ["APPLICATIONINSIGHTS_CONNECTION_STRING"] = endpoints["connection_string"]
    # The test's own urllib calls to the control API are not the app's dependencies.
    os.environ["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "urllib,urllib3,requests"
    # The distro's default sampler is rate-limited and drops most spans of a burst: keep them all here.
    os.environ["OTEL_TRACES_SAMPLER"] = "always_on"
    assert telemetry.configure() == "app"
    yield
    telemetry.shutdown()
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture
async def use_stack(endpoints, monkeypatch) -> AsyncIterator[Callable[..., Awaitable[dict[str, str]]]]:
    """Point the app at the devstack as `identity`; keyword arguments override settings (None removes)."""

    async def configure(identity: str = "reader", **overrides: str | None) -> dict[str, str]:
        for name in SETTING_NAMES:
            monkeypatch.delenv(name, raising=False)
        settings = app_settings(endpoints, identity)
        settings.update(overrides)
        for name, value in settings.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        await runtime.reset_runtime()
        return {k: v for k, v in settings.items() if v is not None}

    yield configure
    await runtime.reset_runtime()


def invocation_context(name: str = "apim_proxy") -> SimpleNamespace:
    """What the worker passes as `context`: here with a fresh W3C trace parent."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return SimpleNamespace(
        invocation_id=secrets.token_hex(8), function_name=name, trace_id=trace_id,
        trace_context=SimpleNamespace(trace_parent=f"00-{trace_id}-{span_id}-01", trace_state="", attributes={}),
    )


def http_request(method: str, path: str, *, query: str = "", body: bytes = b"",
                 headers: dict[str, str] | None = None) -> func.HttpRequest:
    """An HttpRequest as the host builds it for /api/apim/{*path}."""
    url = f"http://localhost:7071/api/apim/{path}" + (f"?{query}" if query else "")
    params = dict(pair.split("=", 1) for pair in query.split("&") if "=" in pair) if query else {}
    return func.HttpRequest(method=method, url=url, route_params={"path": path}, params=params, body=body,
                            headers=headers or {})


@pytest.fixture
def backoff(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits azure-core's retry policies ask for (Retry-After or backoff), recorded, not slept.

    Both pipelines (the APIM client's and azure-identity's) sleep through their transport,
    so this makes retries instant and lets tests assert what was honoured.
    """
    waits: list[float] = []

    async def sleep(self: AioHttpTransport, duration: float) -> None:
        waits.append(duration)

    monkeypatch.setattr(AioHttpTransport, "sleep", sleep)
    return waits
