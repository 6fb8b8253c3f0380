"""Cold start: process start to the first successful answer, against the same dependencies doing it raw.

    app    the dependency modules imported (below), `import function_app`, then one invocation
           of `apim_proxy`: settings read, telemetry configured (configure_azure_monitor),
           credential and pipeline built, one token requested, one TLS connection opened, one
           call answered
    floor  the same dependency modules imported: exactly those the app had loaded by its first
           answer, except its own (`function_app`, `shared.*`), in the same order; then one raw
           token request and one raw call (benchmarks.floor)

The app's own code and set-up is the CPU the app spends after those shared imports, less
what the floor spends after them: the imports themselves (about 400 ms) are the same work
in both, and comparing two whole processes would let their noise swamp a 20 ms difference.
Both kinds of process count, with Python audit hooks, the network calls made while
importing: the app must make none. A third probe imports the dependencies layer by layer
and times each layer, so that a cold start can be read by where it goes.

Runs from the orchestrating process; each sample is a new interpreter, and the
app and the floor alternate so that drift cancels. The best of each is compared:
on a shared VM an occasional process runs a third slower, and that noise only adds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from benchmarks.measure import median
from benchmarks.stack import ROOT, pinned_to

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
    cpu = time.process_time()  # CPU since the process started: what it cost, without the VM's weather
    print(json.dumps({"at": time.monotonic(), "cpu": cpu, "network": len(network), **values}), flush=True)
"""

_FIRST_ANSWER = """
import asyncio
from benchmarks import host
def answer():
    proxy = host.load_functions()["apim_proxy"]
    return asyncio.run(proxy(host.http_request("GET", "status"), host.invocation_context())).status_code
"""

# Taken from before the harness's own imports: what `benchmarks.host` (and the devstack under it) loads
# is loaded in every app probe too, so the floor imports it as well, and neither counts it as its own.
_LIST_MODULES = """
before = set(sys.modules)
""" + _FIRST_ANSWER + """
import function_app
status = answer()
loaded = [name for name in sys.modules if name not in before]
from benchmarks.coldstart import own_module  # after the list is taken
print(json.dumps({"status": status, "modules": [name for name in loaded if not own_module(name)]}))
"""

# Both kinds of process first import the dependency modules the app loads by its first answer
# (what `import function_app` and the first call would import anyway, in the same order), so that
# what each does after that point can be compared without the 400 ms of imports and their noise.
_DEPENDENCIES = """
import importlib
for name in json.load(open(sys.argv[1])):
    try:
        importlib.import_module(name)
    except Exception:
        pass  # a few entries are aliases that only their parent can create; the parent imported them
report(stage="dependencies")
"""

_APP = _PROLOGUE + _DEPENDENCIES + """
import function_app
report(stage="imported")
""" + _FIRST_ANSWER + """
report(stage="answered", status=answer())
"""

_FLOOR = _PROLOGUE + _DEPENDENCIES + """
report(stage="imported")
import asyncio
from benchmarks.floor import Floor
async def answer():
    floor = Floor(json.load(open(sys.argv[2])))
    await floor.prefetch_token()
    try:
        return await floor.call()
    finally:
        await floor.close()
report(stage="answered", status=asyncio.run(answer()))
"""

# Each layer is what the app adds on top of the ones before it, in the order the app loads them.
LAYERS = {
    "azure-functions": "import azure.functions",
    "aiohttp": "import aiohttp",
    "azure-core (pipeline, aiohttp transport)": "import azure.core.pipeline.policies, azure.core.pipeline.transport",
    "azure-identity (aio)": "import azure.identity.aio",
    "opentelemetry (api, sdk)": "import opentelemetry.sdk.trace, opentelemetry.sdk.metrics",
    "azure-monitor-opentelemetry (exporter, distro)": "import azure.monitor.opentelemetry",
    "the app (function_app, shared)": "import function_app, shared.runtime",
}

_LAYERS = _PROLOGUE + """
layers = json.loads(sys.argv[1])
for name, statement in layers.items():
    exec(statement)
    report(layer=name)
"""


def _run(code: str, *args: str, env: Mapping[str, str], cpus: Collection[int] | None) -> list[dict[str, Any]]:
    """Run `python -c code`; its reports, each with `seconds` since the process was spawned."""
    started = time.monotonic()  # CLOCK_MONOTONIC: one clock for all processes, so the child's readings compare
    completed = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=dict(env),
                               capture_output=True, text=True, timeout=120, check=False,
                               preexec_fn=pinned_to(cpus))  # the parent has no threads
    if completed.returncode != 0:
        raise RuntimeError(f"cold-start probe failed: {completed.stderr.strip()[-2000:]}")
    reports = [json.loads(line) for line in completed.stdout.splitlines() if line.startswith("{")]
    return [{**report, "seconds": report["at"] - started} for report in reports]


def dependency_modules(env: Mapping[str, str], out: Path) -> list[str]:
    """The modules an app process has loaded by its first answer, except its own; written to `out`."""
    listed = subprocess.run([sys.executable, "-c", _PROLOGUE + _LIST_MODULES], cwd=ROOT, env=dict(env),
                            capture_output=True, text=True, timeout=120, check=False)
    if listed.returncode != 0:
        raise RuntimeError(f"listing the app's modules failed: {listed.stderr.strip()[-2000:]}")
    found = json.loads(listed.stdout.strip().splitlines()[-1])
    if found["status"] != 200:
        raise RuntimeError(f"the app's first answer was {found['status']}, not 200: {listed.stderr.strip()[-2000:]}")
    out.write_text(json.dumps(found["modules"]), encoding="utf-8")
    return found["modules"]


def measure(env: Mapping[str, str], modules_file: Path, endpoints_file: Path, samples: int,
            cpus: Collection[int] | None) -> dict[str, Any]:
    """`samples` app processes and as many floor processes, alternating; the best of each, compared."""
    _run(_FLOOR, str(modules_file), str(endpoints_file), env=env, cpus=cpus)  # untimed: caches warm
    app: list[list[dict[str, Any]]] = []
    floor: list[list[dict[str, Any]]] = []
    for number in range(samples):
        for kind in ("app", "floor") if number % 2 == 0 else ("floor", "app"):
            if kind == "app":
                app.append(_run(_APP, str(modules_file), env=env, cpus=cpus))
            else:
                floor.append(_run(_FLOOR, str(modules_file), str(endpoints_file), env=env, cpus=cpus))
    layers = [_run(_LAYERS, json.dumps(LAYERS), env=env, cpus=cpus) for _ in range(max(2, samples // 2))]
    app_answer = [stage(reports, "answered")["seconds"] for reports in app]
    floor_answer = [stage(reports, "answered")["seconds"] for reports in floor]
    # CPU from the shared imports to the answer: the app's own imports, set-up and first call, and the floor's
    # raw token request and call. Best of each, as for the whole answer.
    app_after = min(_cpu_between(reports, "dependencies", "answered") for reports in app) * 1000
    floor_after = min(_cpu_between(reports, "dependencies", "answered") for reports in floor) * 1000
    return {
        "samples": samples,
        "app_answered_ms": min(app_answer) * 1000,
        "floor_answered_ms": min(floor_answer) * 1000,
        "ratio": min(app_answer) / min(floor_answer),
        "app_own_ms": app_after - floor_after,
        "app_after_dependencies_cpu_ms": app_after,
        "floor_after_dependencies_cpu_ms": floor_after,
        "app_answered_median_ms": median(app_answer) * 1000,
        "floor_answered_median_ms": median(floor_answer) * 1000,
        "app_imported_ms": min(stage(reports, "imported")["seconds"] for reports in app) * 1000,
        "floor_imported_ms": min(stage(reports, "imported")["seconds"] for reports in floor) * 1000,
        "app_cpu_ms": min(stage(reports, "answered")["cpu"] for reports in app) * 1000,
        "floor_cpu_ms": min(stage(reports, "answered")["cpu"] for reports in floor) * 1000,
        "network_events_during_import": sum(stage(reports, "imported")["network"] for reports in app),
        "statuses": sorted({stage(reports, "answered")["status"] for reports in app + floor}),
        "layers_ms": _layer_costs(layers),
    }


def own_module(name: str) -> bool:
    """The app's own modules (`function_app`, `shared` and under it): never part of a floor."""
    return name in ("function_app", "shared") or name.startswith("shared.")


def stage(reports: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """A probe's report of the stage `name`."""
    return next(report for report in reports if report.get("stage") == name)


def _cpu_between(reports: list[dict[str, Any]], start: str, end: str) -> float:
    return float(stage(reports, end)["cpu"] - stage(reports, start)["cpu"])


def _layer_costs(runs: list[list[dict[str, Any]]]) -> dict[str, float]:
    """Per layer, the best of the runs of the time it added (the first layer includes interpreter start)."""
    costs: dict[str, list[float]] = {}
    for reports in runs:
        previous = 0.0
        for report in reports:
            costs.setdefault(report["layer"], []).append(report["seconds"] - previous)
            previous = report["seconds"]
    return {name: min(values) * 1000 for name, values in costs.items()}
