"""The devstack's own tests run against a stack of their own.

The app's tests configure its telemetry exporter for the session's stack, and it keeps
posting in the background; here it would take one-shot faults and add to the counts
these tests assert. Fixtures of the same name in tests/conftest.py are overridden.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devstack import DevStack
from devstack.config import PROJECT_ROOT


@pytest.fixture(scope="package")
def devstack() -> Iterator[DevStack]:
    with DevStack() as stack:
        yield stack


@pytest.fixture(scope="package")
def endpoints(devstack: DevStack) -> dict[str, Any]:
    return devstack.endpoints


# --- `python -m devstack up` in a process of its own -------------------------------------------

_STARTED: list[subprocess.Popen[str]] = []


def start_up(state_dir: Path, *options: str) -> subprocess.Popen[str]:
    """`python -m devstack up` with this state dir; stopped at the end of the test that started it."""
    process = subprocess.Popen([sys.executable, "-m", "devstack", "up", "--state-dir", str(state_dir), *options],
                               cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _STARTED.append(process)
    return process


@pytest.fixture(autouse=True)
def _no_stack_outlives_its_test() -> Iterator[None]:
    """A test that fails before it stops its `up` must not leave the stack running (a module's own stays)."""
    before = len(_STARTED)
    yield
    while len(_STARTED) > before:
        process = _STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=30)


# --- telemetry as infra/ deploys it: Entra-authenticated, over HTTPS ----------------------

MI_SOURCE_VARIABLES = ("IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT",
                       "MSI_ENDPOINT", "MSI_SECRET", "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_FEDERATED_TOKEN_FILE")


@pytest.fixture
def exporter_auth(endpoints: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Keyword arguments that give an Azure Monitor exporter the host identity's managed-identity
    credential (the stand-in's App Service endpoint), and trust for ingestion's certificate."""
    from azure.identity import ManagedIdentityCredential

    for name in MI_SOURCE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IDENTITY_ENDPOINT", endpoints["identity_endpoint"])
    monkeypatch.setenv("IDENTITY_HEADER", endpoints["identity_header"])
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", endpoints["ca_bundle"])
    with ManagedIdentityCredential(client_id=endpoints["identities"]["host"]["client_id"]) as credential:
        yield {"credential": credential}


def monitor_token(stack: DevStack, identity: str = "host") -> str:
    """A token for the monitor resource, as the platform would hand it to `identity`."""
    from devstack.entra import MONITOR_RESOURCE

    grant, _ = stack.state.platform.grant(stack.state.config.identities[identity], MONITOR_RESOURCE + "/")
    return grant.token


def ingestion_session(stack: DevStack, identity: str | None = "host") -> Any:
    """An aiohttp session that trusts ingestion's certificate and sends `identity`'s bearer token."""
    import aiohttp

    assert stack.state.tls is not None
    headers = {"Authorization": f"Bearer {monitor_token(stack, identity)}"} if identity else {}
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=stack.state.tls.client_context()),
                                 headers=headers)
