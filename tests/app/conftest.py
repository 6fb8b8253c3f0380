"""Fixtures for the function app: settings pointing at the devstack, host-like invocation."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from azure.core.pipeline.transport import AioHttpTransport

from devstack.appsettings import app_settings

# The objects the worker builds, re-exported for the test modules that invoke functions.
from devstack.invocation import indexed_functions, invocation_context, timer_request, user_functions  # noqa: F401
from devstack.invocation import proxy_request as http_request  # noqa: F401
from shared import runtime, telemetry

# The app is indexed once per process, as the worker does (devstack.invocation keeps the index).
INDEXED = indexed_functions()
FUNCTIONS = user_functions()
SETTING_NAMES = ("APIM_BASE_URL", "APIM_SUBSCRIPTION_KEY", "API_APP_ID_URI", "MANAGED_IDENTITY_CLIENT_ID",
                 "MANAGED_IDENTITY_WRITE_CLIENT_ID", "AZURE_TENANT_ID", "TIMER_API_PATH", "TIMER_SCHEDULE",
                 "IDENTITY_ENDPOINT", "IDENTITY_HEADER")


@pytest.fixture(scope="session", autouse=True)
def telemetry_to_devstack(endpoints: dict[str, Any]) -> Iterator[None]:
    """Configure export once for the run, to the ingestion stand-in, as the app does in Azure."""
    saved = dict(os.environ)
    # Entra-authenticated export, as infra/ deploys it: the exporter's own ManagedIdentityCredential
    # gets its token from the identity stand-in for the host identity.
    for name in ("APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
                 "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "REQUESTS_CA_BUNDLE"):
        os.environ[name] = app_settings(endpoints)[name]
    # The test's own urllib calls to the control API are not the app's dependencies.
    os.environ["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "urllib,urllib3,requests"
    # The distro's default sampler is rate-limited and drops most spans of a burst: keep them all here.
    os.environ["OTEL_TRACES_SAMPLER"] = "always_on"
    assert telemetry.configure() == "app"
    _each_exporter_gets_its_token()
    yield
    telemetry.shutdown()
    os.environ.clear()
    os.environ.update(saved)


def _each_exporter_gets_its_token() -> None:
    """Export one span, one log record and one metric now, so that each exporter's own
    ManagedIdentityCredential asks for its token before the tests count token requests
    (it then holds it for hours, as in Azure)."""
    import logging

    from opentelemetry import metrics, trace

    with trace.get_tracer(__name__).start_as_current_span("warm-up"):
        logging.getLogger("shared.tests").warning("telemetry warm-up")
    metrics.get_meter(__name__).create_counter("tests.warm_up").add(1)
    telemetry.flush()


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
