"""`python -m devstack demo`, the Python entry point behind ./scripts/demo, run as a user would."""

from __future__ import annotations

import subprocess
import sys

from tests.devstack.test_cli import PROJECT_ROOT


def test_the_demo_succeeds_and_explains_what_newcomers_misread():
    result = subprocess.run([sys.executable, "-m", "devstack", "demo"], cwd=PROJECT_ROOT, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    out = " ".join(result.stdout.split())  # the notes are wrapped
    assert "Demo finished: every step behaved as expected." in out
    assert "UNEXPECTED" not in out and "Traceback" not in result.stderr
    # A v2 token's aud is the API's client ID, printed right under the App ID URI.
    assert "aud: 5f1c2e3d-4b5a-4c6d-8e7f-9a0b1c2d3e4f" in out
    assert "note: aud is the API app's client ID, not api://contoso-orders" in out
    assert "azp is the calling identity's client ID (MANAGED_IDENTITY_CLIENT_ID)" in out
    # 'GET /orders/orders' in the telemetry summary: API path + operation path.
    assert "dependency HTTP: GET /orders/orders" in out
    assert "'GET /orders/orders' is the API's path on the gateway (/orders, the end of APIM_BASE_URL)" in out
    # One run of the Logic App workflow that infra/ deploys.
    assert "Logic App: the workflow infra/ deploys, run once" in out
    assert "run Succeeded" in out and "Call_Orders_API answered 200 OK" in out
