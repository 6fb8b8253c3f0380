"""Cold start: process start to `import function_app` done, against a dependency-only floor.

The floor is a process that imports exactly the modules that importing the app
loads, except the app's own (`function_app`, `shared.*`), in the same order. The
ratio is therefore what the app's own code adds at import: decorators, settings
objects, telemetry instruments, anything done eagerly. Both kinds of process
count, with Python audit hooks, the network calls made while importing: the
app must make none.

For context (no target): a few processes also go on to answer one invocation,
which is when the app configures telemetry, gets its token and opens its
connection, so "start to first answer" shows where a cold start goes.

Runs from the orchestrating process; each sample is a new interpreter, and the
app and the floor alternate so that drift cancels.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from typing import Any

from benchmarks.measure import median
from benchmarks.stack import ROOT, pinned_to

FIRST_RESPONSE_SAMPLES = 2

# Every probe starts like this: a clock reading to report against, and an audit hook that
# counts the socket events that talk to someone (C extensions included). Binding a socket
# is not one: urllib3, imported by azure-identity's msal, binds one to ::1 to probe for IPv6.
_PROLOGUE = """
import json, sys, time
network = []
sys.addaudithook(lambda event, args: network.append(event) if event in (
    "socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
    "socket.sendto", "socket.sendmsg") else None)
def report(**values):
    cpu = time.process_time()  # CPU since the process started: what the import cost, without the VM's weather
    print(json.dumps({"at": time.monotonic(), "cpu": cpu, "network": len(network), **values}), flush=True)
"""

_LIST_MODULES = """
import json, sys
before = set(sys.modules)
import function_app
own = lambda name: name in ("function_app", "shared") or name.startswith("shared.")
print(json.dumps([name for name in sys.modules if name not in before and not own(name)]))
"""

_IMPORT_APP = _PROLOGUE + """
import function_app
report(functions=len(function_app.app.get_functions()))
"""

_IMPORT_DEPENDENCIES = _PROLOGUE + """
import importlib
for name in json.load(open(sys.argv[1])):
    try:
        importlib.import_module(name)
    except Exception:
        pass  # a few entries are aliases that only their parent can create; the parent imported them
report()
"""

_FIRST_RESPONSE = _PROLOGUE + """
import function_app
report(stage="imported")
import asyncio
from benchmarks import host
proxy = host.load_functions()["apim_proxy"]
response = asyncio.run(proxy(host.http_request("GET", "status"), host.invocation_context()))
report(stage="answered", status=response.status_code)
"""


def _run(code: str, *args: str, env: dict[str, str], cpus: Collection[int] | None) -> list[dict[str, Any]]:
    """Run `python -c code`; its reports, each with `seconds` since the process was spawned."""
    started = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes, so the child's readings compare
    completed = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                               capture_output=True, text=True, timeout=120, check=False,
                               preexec_fn=pinned_to(cpus))  # the parent has no threads
    if completed.returncode != 0:
        raise RuntimeError(f"cold-start probe failed: {completed.stderr.strip()[-2000:]}")
    reports = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return [{**report, "seconds": report["at"] - started} for report in reports]


def measure(settings: dict[str, str], samples: int, cpus: Collection[int] | None) -> dict[str, Any]:
    """`samples` app processes and as many floor processes, alternating; the ratio of the fastest of each.

    The fastest, not the median: on a shared VM an occasional process runs a third slower
    (its CPU time grows with it, so it is the machine, not I/O), and that noise only ever
    adds. The best of a few runs is each side's own cost; medians are reported too.
    """
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **settings}
    listed = subprocess.run([sys.executable, "-c", _LIST_MODULES], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=120, check=True)
    modules = json.loads(listed.stdout.strip().splitlines()[-1])
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(modules, handle)
    try:
        # The floor once, untimed (listing the modules did the same for the app): bytecode
        # caches written, files in the page cache.
        _run(_IMPORT_DEPENDENCIES, handle.name, env=env, cpus=cpus)
        app: list[dict[str, Any]] = []
        floor: list[float] = []
        for number in range(samples):
            for kind in ("app", "floor") if number % 2 == 0 else ("floor", "app"):
                if kind == "app":
                    app.append(_run(_IMPORT_APP, env=env, cpus=cpus)[-1])
                else:
                    floor.append(_run(_IMPORT_DEPENDENCIES, handle.name, env=env, cpus=cpus)[-1]["seconds"])
        first = [_run(_FIRST_RESPONSE, env=env, cpus=cpus) for _ in range(FIRST_RESPONSE_SAMPLES)]
    finally:
        Path(handle.name).unlink(missing_ok=True)
    app_seconds = [report["seconds"] for report in app]
    return {
        "samples": samples,
        "app_ms": min(app_seconds) * 1000,
        "floor_ms": min(floor) * 1000,
        "ratio": min(app_seconds) / min(floor),
        "app_median_ms": median(app_seconds) * 1000,
        "floor_median_ms": median(floor) * 1000,
        "app_cpu_ms": min(report["cpu"] for report in app) * 1000,
        "dependency_modules": len(modules),
        "network_events_during_import": sum(report["network"] for report in app),
        "functions_indexed": app[-1]["functions"],
        "first_response": {
            "samples": FIRST_RESPONSE_SAMPLES,
            "imported_ms": min(reports[0]["seconds"] for reports in first) * 1000,
            "answered_ms": min(reports[1]["seconds"] for reports in first) * 1000,
            "statuses": sorted({reports[1]["status"] for reports in first}),
        },
    }
