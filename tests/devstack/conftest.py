"""The devstack's own tests run against a stack of their own.

The app's tests configure its telemetry exporter for the session's stack, and it keeps
posting in the background; here it would take one-shot faults and add to the counts
these tests assert. Fixtures of the same name in tests/conftest.py are overridden.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from devstack import DevStack


@pytest.fixture(scope="package")
def devstack() -> Iterator[DevStack]:
    with DevStack() as stack:
        yield stack


@pytest.fixture(scope="package")
def endpoints(devstack: DevStack) -> dict[str, Any]:
    return devstack.endpoints
