"""Counts, not timings, behind the benchmark's claims (issue 5; the timings live in benchmarks/).

- A burst of 1000 invocations on a cold runtime makes exactly one token request per
  identity, and later calls make none until the token nears its refresh window (the
  refresh itself is covered by test_tokens.py with a fake clock).
- Importing the app is cheap and offline, counted by Python's audit hooks, which see
  socket use from C extensions too: no connection or name lookup, no thread, no
  telemetry exporter (the heaviest dependency, loaded on first use). This
  extends test_function_app.py's import test (settings absent, socket functions
  patched) rather than repeating it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import function_app
from tests.plugin import FUNCTIONS, http_request, invocation_context

proxy = FUNCTIONS["apim_proxy"]
ORDER = json.dumps({"item": "storm", "quantity": 1}).encode()


def storm_invocation(number: int):
    """Mostly reads (reader identity), every tenth a write (writer identity): both face the storm."""
    if number % 10 == 9:
        return proxy(http_request("POST", "orders", body=ORDER, headers={"Content-Type": "application/json"}),
                     invocation_context())
    return proxy(http_request("GET", "status"), invocation_context())


async def test_a_storm_on_a_cold_runtime_makes_one_token_request_per_identity(use_stack, control, endpoints):
    await use_stack("reader")  # a fresh runtime: no token, no session, nothing in flight
    reader, writer = (endpoints["identities"][name]["client_id"] for name in ("reader", "writer"))

    responses = await asyncio.gather(*(storm_invocation(number) for number in range(1000)))
    assert sorted({r.status_code for r in responses}) == [200, 201]
    identity = control.stats()["identity"]
    assert identity["by_client_id"] == {reader: 1, writer: 1}
    assert identity["token_requests"] == 2

    # Well before the refresh window (tokens live an hour), another burst uses the cached tokens.
    responses = await asyncio.gather(*(storm_invocation(number) for number in range(200)))
    assert sorted({r.status_code for r in responses}) == [200, 201]
    assert control.stats()["identity"]["token_requests"] == 2


# Audit events of a socket that talks to someone. (A socket merely bound to ::1 is not among
# them: urllib3, which azure-identity's msal imports, probes for IPv6 that way at import.)
NETWORK_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
                  "socket.getnameinfo", "socket.sendto", "socket.sendmsg")


def test_import_touches_no_network_starts_no_thread_and_loads_no_exporter():
    code = textwrap.dedent(f"""
        import json, sys, threading
        events = []
        sys.addaudithook(lambda event, args: events.append(event) if event in {NETWORK_EVENTS!r} else None)
        threads = threading.active_count()
        import function_app
        print(json.dumps({{
            "network_events": events,
            "new_threads": threading.active_count() - threads,
            "exporter_loaded": "azure.monitor.opentelemetry" in sys.modules,
            "functions": len(function_app.app.get_functions()),
        }}))
    """)
    # With every setting a deployed app has, connection string included: import still only defines functions.
    env = {"PATH": "/usr/bin:/bin", "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x",
           "IDENTITY_ENDPOINT": "http://127.0.0.1:9/msi/token", "IDENTITY_HEADER": "x",
           "APIM_BASE_URL": "https://apim.contoso.example/orders", "API_APP_ID_URI": "api://contoso-orders"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                            cwd=str(Path(function_app.__file__).parent))
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {"network_events": [], "new_threads": 0, "exporter_loaded": False, "functions": 3}
