"""With the devstack's settings, setting up telemetry and exporting a call touch only loopback.

Statsbeat, Live Metrics, the OneSettings control plane and the Azure VM resource detector
would each reach for an Azure host; an audit hook in a fresh interpreter sees every
address the process connects to or looks up, whichever library does it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devstack.appsettings import OFFLINE_EXPORTER_SETTINGS, app_settings
from shared import telemetry

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import asyncio, ipaddress, json, sys, time

    seen = []

    def audit(event, args):
        if event == "socket.connect":
            address = args[1]
            if isinstance(address, tuple):
                seen.append(("connect", str(address[0])))
        elif event == "socket.getaddrinfo":
            seen.append(("getaddrinfo", str(args[0])))

    sys.addaudithook(audit)

    from shared import api, runtime, telemetry

    async def main():
        mode = telemetry.configure()
        status = (await api().call("GET", "/status")).status
        telemetry.flush()
        await runtime.reset_runtime()
        time.sleep(2)  # Live Metrics, when on, pings one second after it starts
        return mode, status

    mode, status = asyncio.run(main())
    telemetry.shutdown()

    def loopback(host):
        if host in ("localhost", "None"):
            return True
        try:
            return ipaddress.ip_address(host.split("%")[0]).is_loopback
        except ValueError:
            return False

    print(json.dumps({"mode": mode, "status": status, "hosts": sorted({h for _, h in seen}),
                      "outside": sorted({f"{kind} {h}" for kind, h in seen if not loopback(h)})}))
""")


def test_telemetry_with_the_devstack_settings_touches_only_loopback(endpoints):
    settings = app_settings(endpoints)
    assert OFFLINE_EXPORTER_SETTINGS.items() <= settings.items()
    # Without its LiveEndpoint (as in tests that make up a connection string), Live Metrics,
    # if on, would fall back to Azure's own host: the settings alone must keep it off.
    connection = ";".join(part for part in settings["APPLICATIONINSIGHTS_CONNECTION_STRING"].split(";")
                          if not part.startswith("LiveEndpoint="))
    env = {"PATH": "/usr/bin:/bin", **settings, "APPLICATIONINSIGHTS_CONNECTION_STRING": connection}
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert (report["mode"], report["status"]) == ("app", 200)
    assert report["hosts"], "the audit hook saw no connection at all: it cannot have watched the export"
    assert report["outside"] == []


@pytest.mark.parametrize(("value", "enabled"), [(None, True), ("", True), ("true", True), (" Yes ", True),
                                                ("false", False), ("0", False), ("No", False), ("maybe", True)])
def test_the_live_metrics_setting_keeps_the_distros_default_unless_turned_off(value, enabled):
    env = {} if value is None else {telemetry.LIVE_METRICS_SETTING: value}
    assert telemetry.live_metrics_enabled(env) is enabled
