"""The app's tests export telemetry to the session's devstack, as the app does in Azure."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _exporting(telemetry_to_devstack: None) -> None:
    """The session's exporter (set up once, in tests/plugin.py) for every test here."""
