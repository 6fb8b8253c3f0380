"""Fixtures and helpers every test suite shares, loaded once with `pytest_plugins` (tests/conftest.py).

One devstack for the whole run; the function app pointed at it through its settings;
invocations built as the host builds them. Suites use these by name; nothing here is
imported from one conftest into another.
"""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from azure.core.pipeline.transport import AioHttpTransport

from devstack import DevStack
from devstack.appsettings import OFFLINE_EXPORTER_SETTINGS, app_settings
from devstack.cli import FREE_PORTS_ENV
from devstack.config import load_config

# The objects the worker builds, re-exported for the test modules that invoke functions.
from devstack.invocation import indexed_functions, invocation_context, timer_request, user_functions  # noqa: F401
from devstack.invocation import proxy_request as http_request  # noqa: F401
from shared import runtime, telemetry
from shared.apim import Timeouts
from shared.settings import SETTINGS, setting_name


def pytest_configure(config: pytest.Config) -> None:
    # Tests are offline: keep every Azure Monitor exporter a test creates (statsbeat,
    # OneSettings control plane, SDK stats) from reaching for Microsoft's hosts.
    os.environ.update(OFFLINE_EXPORTER_SETTINGS)
    # Every `python -m devstack up` a test starts picks free ports (unless the test names one):
    # the fixed default ports may be held by a developer's stack or another test run.
    os.environ[FREE_PORTS_ENV] = "1"


# Where the Orders API's calls arrive on the backend service: the sample backend API's path
# (the Orders API's serviceUrl). A recorded backend request's "path" starts with it.
_sample_backend = load_config().sample_backend
assert _sample_backend is not None
SAMPLE_BACKEND = "/" + _sample_backend.api_path


def apim_token(stack: DevStack) -> str:
    """What API Management sends the sample backend: a token of its own managed identity."""
    config = stack.state.config
    assert config.apim_identity is not None and config.sample_backend is not None
    grant, _ = stack.state.platform.grant(config.apim_identity, config.sample_backend.app.app_id_uri)
    return grant.token


class Control:
    """Tiny client for the devstack control API (stdlib only, usable from any thread)."""

    def __init__(self, control_url: str) -> None:
        self.url = control_url

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            raw = response.read()
        return json.loads(raw) if raw else None

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/stats")

    def telemetry(self) -> list[dict[str, Any]]:
        return self._call("GET", "/telemetry")

    def fault(self, service: str, **spec: Any) -> None:
        self._call("POST", "/faults", {"service": service, **spec})

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def reset(self) -> None:
        self._call("POST", "/reset")

    def faults(self) -> list[dict[str, Any]]:
        return self._call("GET", "/faults")

    def roll_over_tokens(self, identity: str | None = None) -> int:
        """Empty the platform's token cache (one identity's, or all): as if Azure refreshed it."""
        return self._call("POST", "/identity/rollover", {"identity": identity} if identity else {})["tokens_dropped"]

    def assign_role(self, identity: str, role: str) -> list[str]:
        return self._call("POST", "/identity/roles", {"identity": identity, "role": role})["roles"]

    def remove_role(self, identity: str, role: str) -> list[str]:
        return self._call("DELETE", "/identity/roles", {"identity": identity, "role": role})["roles"]

    def rotate_signing_key(self) -> str:
        """Sign new tokens with a new key (the previous one stays published); returns its kid."""
        return self._call("POST", "/identity/signing-keys/rotate")["kid"]

    def backend_requests(self) -> list[dict[str, Any]]:
        """What reached the backend since the last reset, oldest first."""
        return self._call("GET", "/backend/requests")


@pytest.fixture(scope="session")
def devstack() -> Iterator[DevStack]:
    with DevStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def endpoints(devstack: DevStack) -> dict[str, Any]:
    return devstack.endpoints


@pytest.fixture
def control(devstack: DevStack) -> Iterator[Control]:
    """Control client; counters, telemetry and faults start clean for each test."""
    client = Control(devstack.endpoints["control_url"])
    client.reset()
    yield client
    client.clear_faults()


# The app can be indexed only once per process (as the worker does): every test module uses these.
# The app is indexed once per process, as the worker does (devstack.invocation keeps the index).
INDEXED = indexed_functions()
FUNCTIONS = user_functions()
# Every setting use_stack may set: both connections' and the identity endpoint's.
SETTING_NAMES = (*(setting_name(s.name, c) for c in (None, "inventory") for s in SETTINGS),
                 "IDENTITY_ENDPOINT", "IDENTITY_HEADER")


@pytest.fixture(scope="session")
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


# Per attempt, for the tests that make APIM or the identity endpoint slow (a fault's delay_ms exceeds these).
SHORT_READ_TIMEOUT = 0.4


@pytest.fixture
def short_timeouts() -> Iterator[runtime.RuntimeTimeouts]:
    """Runtimes built during the test wait SHORT_READ_TIMEOUT per attempt for APIM and the identity endpoint."""
    timeouts = runtime.RuntimeTimeouts(apim=Timeouts(connect=2.0, read=SHORT_READ_TIMEOUT, total=30.0),
                                       identity_read=SHORT_READ_TIMEOUT)
    runtime.use_timeouts(timeouts)
    yield timeouts
    runtime.use_timeouts(runtime.RuntimeTimeouts())
