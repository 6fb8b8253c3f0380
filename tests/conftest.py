"""Fixtures shared by every test: one devstack for the whole run."""

from __future__ import annotations

import json
import os
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from devstack import DevStack
from devstack.appsettings import OFFLINE_EXPORTER_SETTINGS
from devstack.cli import FREE_PORTS_ENV

# Tests are offline: keep every Azure Monitor exporter a test creates (statsbeat,
# OneSettings control plane, SDK stats) from reaching for Microsoft's hosts.
os.environ.update(OFFLINE_EXPORTER_SETTINGS)
# Every `python -m devstack up` a test starts picks free ports (unless the test names one):
# the fixed default ports may be held by a developer's stack or another test run.
os.environ[FREE_PORTS_ENV] = "1"


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
