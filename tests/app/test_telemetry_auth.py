"""Telemetry as infra/ deploys it: Entra-authenticated ingestion, in a process of its own.

Telemetry is configured once per process, so each case runs the app in a child process
with the settings `python -m devstack settings` writes, against the session's stack.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import function_app
from devstack.appsettings import app_settings

CHILD = textwrap.dedent("""
    import asyncio, json, logging

    refusals = []

    class Capture(logging.Handler):
        def emit(self, record):
            if "refuses this app's telemetry" in record.getMessage():
                refusals.append(record.getMessage())

    logging.getLogger("shared.telemetry").addHandler(Capture())
    from devstack.invocation import invocation_context, proxy_request, user_functions
    from shared import telemetry

    proxy = user_functions()["apim_proxy"]  # imports and indexes function_app, as the worker does

    async def main():
        statuses = []
        for _ in range(3):
            statuses.append((await proxy(proxy_request("GET", "status"), invocation_context())).status_code)
            telemetry.flush()  # one export per call: each is refused
        return statuses

    statuses = asyncio.run(main())
    telemetry.shutdown()
    print(json.dumps({"mode": telemetry.configure(), "statuses": statuses, "refusals": refusals}))
""")


def run_app(endpoints: dict[str, Any], **settings: Any) -> dict[str, Any]:
    env = {"PATH": "/usr/bin:/bin", **app_settings(endpoints, **settings)}
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=120,
                            cwd=str(Path(function_app.__file__).parent))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_telemetry_is_exported_with_entra_authentication(endpoints, control):
    seen = run_app(endpoints)

    assert seen["mode"] == "app" and seen["statuses"] == [200, 200, 200] and seen["refusals"] == []
    stats = control.stats()
    assert stats["ingestion"]["items"] > 0 and "refused_items" not in stats["ingestion"]
    # The exporter got its token through the managed-identity endpoint, for the host identity.
    host = endpoints["identities"]["host"]["client_id"]
    assert stats["identity"]["by_client_id"][host] >= 1


def test_an_identity_without_the_publisher_role_has_its_telemetry_refused_and_calls_succeed(endpoints, control):
    seen = run_app(endpoints, telemetry_identity="reader")

    assert seen["statuses"] == [200, 200, 200]  # telemetry never fails a call
    assert len(seen["refusals"]) == 1  # said once, not once per export
    assert "HTTP 403" in seen["refusals"][0] and "Monitoring Metrics Publisher" in seen["refusals"][0]
    ingestion = control.stats()["ingestion"]
    assert ingestion["refused_items"] > 0 and set(ingestion["refused_by_reason"]) == {"forbidden"}


def test_the_demo_exports_its_telemetry_with_entra_authentication():
    result = subprocess.run([sys.executable, "-m", "devstack", "demo"], capture_output=True, text=True, timeout=300,
                            cwd=str(Path(function_app.__file__).parent),
                            env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Entra-authenticated as 'host' (Monitoring Metrics Publisher); 0 refused" in result.stdout
