"""Counts, not timings, behind the benchmark's claims (the timings live in benchmarks/).

- In steady state a call costs no round trip of its own: no token request, no new
  connection, no TLS handshake (APIM over real TLS, the app trusting the stand-in's
  CA through SSL_CERT_FILE, as the benchmark runs it).
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
from devstack import DevStack
from devstack.appsettings import app_settings
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

    def app_requests() -> dict[str, int]:
        # The app's identities only: the telemetry exporter asks for a token of its own (the host's
        # identity, for Entra-authenticated ingestion) whenever it first exports.
        by_client = control.stats()["identity"]["by_client_id"]
        return {client_id: by_client.get(client_id, 0) for client_id in (reader, writer)}

    responses = await asyncio.gather(*(storm_invocation(number) for number in range(1000)))
    assert sorted({r.status_code for r in responses}) == [200, 201]
    assert app_requests() == {reader: 1, writer: 1}

    # Well before the refresh window (tokens live an hour), another burst uses the cached tokens.
    responses = await asyncio.gather(*(storm_invocation(number) for number in range(200)))
    assert sorted({r.status_code for r in responses}) == [200, 201]
    assert app_requests() == {reader: 1, writer: 1}


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


STEADY_STATE = """
import asyncio, json, os, sys, urllib.request
hosts = set()
sys.addaudithook(lambda event, args: hosts.add(args[1][0]) if event == "socket.connect" and isinstance(args[1], tuple)
                 else None)
from types import SimpleNamespace
import azure.functions as func
import function_app
from shared import runtime, telemetry
proxy = {f.get_function_name(): f.get_user_function() for f in function_app.app.get_functions()}["apim_proxy"]
stats_url = sys.argv[1] + "/stats"
def stats():
    with urllib.request.urlopen(stats_url, timeout=10) as response:
        stats = json.load(response)
    # The app's identity (GET calls): the exporter's own token, for authenticated ingestion, is not the app's.
    app_identity = os.environ["MANAGED_IDENTITY_CLIENT_ID"]
    return {"tokens": stats.get("identity", {}).get("by_client_id", {}).get(app_identity, 0),
            "connections": stats.get("apim", {}).get("connections", 0),
            "handshakes": stats.get("apim", {}).get("tls_handshakes", 0)}
def call():
    request = func.HttpRequest(method="GET", url="http://localhost/api/apim/status", route_params={"path": "status"},
                               params={}, body=b"", headers={})
    return proxy(request, SimpleNamespace(invocation_id="1", trace_context=SimpleNamespace(
        trace_parent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", trace_state="", attributes={})))
async def main():
    statuses = set()
    for concurrency in (1, 64, 1, 64):  # warm-up, then the same again counted
        responses = await asyncio.gather(*(call() for _ in range(concurrency)))
        statuses |= {r.status_code for r in responses}
        if concurrency == 64 and "warm" not in globals():
            globals()["warm"] = stats()
    counted = stats()
    await runtime.reset_runtime()
    telemetry.shutdown()
    print(json.dumps({"warm": warm, "after": counted, "statuses": sorted(statuses), "hosts": sorted(hosts)}))
asyncio.run(main())
"""


def test_steady_state_calls_request_no_token_and_open_no_connection():
    with DevStack(tls=True) as stack:  # a stack of its own: APIM over TLS, counters nobody else moves
        endpoints = stack.endpoints
        env = {"PATH": "/usr/bin:/bin", **app_settings(endpoints), "SSL_CERT_FILE": endpoints["ca_bundle"],
               "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "urllib,urllib3,requests"}
        assert env["APIM_BASE_URL"].startswith("https://")  # no loopback exception: the HTTPS rule holds
        result = subprocess.run([sys.executable, "-c", STEADY_STATE, endpoints["control_url"]], capture_output=True,
                                text=True, env=env, timeout=120, cwd=str(Path(function_app.__file__).parent))
    assert result.returncode == 0, result.stderr[-3000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["statuses"] == [200]
    assert seen["warm"]["tokens"] == 1 and seen["warm"]["handshakes"] >= 1  # the counters count
    assert seen["after"] == seen["warm"]  # 65 more calls: not one token request, connection or handshake
    assert seen["hosts"] == ["127.0.0.1"]  # telemetry set-up included: no probe of the VM metadata endpoint
