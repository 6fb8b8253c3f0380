"""`python -m benchmarks [--quick] [--out results.json] [--check] [--no-pin]`: what the app costs its user.

Starts the devstack in its own process (APIM over real TLS, a local CA trusted
through SSL_CERT_FILE), runs each measurement in a fresh child process against
it, prints a table of the figures against their targets, and writes everything
measured as JSON. See benchmarks/README.md for the method.

On Linux with two or more CPUs the devstack gets one CPU and the measured
processes another, as APIM and the function app would have machines of their
own: otherwise the scheduler moves them around (or onto one CPU) from run to
run, and a loopback round trip changes by a third with it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import callgrind, coldstart, host, report
from benchmarks.child import Child, ChildError, run_child, run_children_while
from benchmarks.stack import StackError, StackProcess

# How much of each measurement a run does. `quick` fits in a minute on two cores; the full run
# takes a few and gives steadier medians. `calls`: app calls counted per callgrind regime;
# `loopback_rounds` rounds of one floor and one app call; `network` rounds of floor, app and
# naive per modelled RTT (ms); `throughput_rounds` rounds of one floor and one app block at c=64.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "instructions": {"calls": 40},
        "calls": {"steady_calls": 200, "loopback_rounds": 500, "network": {"2": 40, "10": 120, "30": 8},
                  "throughput_rounds": 4, "throughput_calls": 150},
        "cold_start_samples": 5,
        "memory": {"first": 1000, "invocations": 10_000},
    },
    "full": {
        "instructions": {"calls": 200},
        "calls": {"steady_calls": 1000, "loopback_rounds": 3000, "network": {"2": 300, "10": 400, "30": 100},
                  "throughput_rounds": 20, "throughput_calls": 300},
        "cold_start_samples": 9,
        "memory": {"first": 1000, "invocations": 10_000},
    },
}
STORM_INVOCATIONS = 1000
PACKAGES = ("azure-functions", "azure-core", "azure-identity", "aiohttp", "opentelemetry-sdk",
            "azure-monitor-opentelemetry", "azure-monitor-opentelemetry-exporter")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples; under a minute on two cores")
    parser.add_argument("--out", type=Path, help="write the results as JSON to this file")
    parser.add_argument("--check", action="store_true", help="exit with status 2 when a target is missed")
    parser.add_argument("--no-pin", action="store_true", help="let the OS schedule the devstack and the app freely")
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "full"
    try:
        results = run(PROFILES[mode], cpu_plan(pin=not args.no_pin))
    except (StackError, ChildError) as exc:
        print(f"benchmarks: error: {exc}", file=sys.stderr)
        return 1
    summary = report.summarize(results)
    document = {"mode": mode, "machine": machine(), **summary, "measurements": results}
    print(report.table(results, summary))
    if args.out:
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.out}")
    return 2 if args.check and not summary["all_met"] else 0


def cpu_plan(*, pin: bool) -> dict[str, list[int] | None]:
    """One CPU for the devstack, another for what is measured (the orchestrator only waits)."""
    if not pin or not hasattr(os, "sched_getaffinity"):
        return {"devstack": None, "measured": None}
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return {"devstack": None, "measured": None}
    return {"devstack": [cpus[-1]], "measured": [cpus[0]]}


def run(profile: dict[str, Any], cpus: dict[str, list[int] | None]) -> dict[str, Any]:
    started = time.monotonic()
    measured = cpus["measured"]

    def progress(what: str) -> None:
        print(f"[{time.monotonic() - started:5.1f} s] {what}", file=sys.stderr, flush=True)

    results: dict[str, Any] = {"cpus": cpus}
    with tempfile.TemporaryDirectory(prefix="benchmarks-") as scratch_dir:
        scratch = Path(scratch_dir)
        progress(f"starting the devstack, APIM over TLS, in its own process (CPUs: {cpus['devstack'] or 'any'})")
        with StackProcess(scratch / "devstack", cpus["devstack"], tls=True) as stack:
            endpoints_file = stack.state_dir / "endpoints.json"
            env = host.process_environment(stack.endpoints)
            app_env = {**env, **host.settings_for(stack.endpoints)}  # the host sets them before the worker starts
            modules_file = scratch / "modules.json"
            coldstart.dependency_modules(app_env, modules_file)
            progress("side by side (sizes and counts, not timings): instructions under callgrind in both "
                     "sampling regimes, memory of the app and of its floor")
            results.update(counts(profile, endpoints_file, env, scratch))
            progress(f"token storm: {STORM_INVOCATIONS} concurrent invocations on a cold process")
            results["storm"] = run_child("benchmarks.storm", endpoints_file, measured, env,
                                         invocations=STORM_INVOCATIONS)
            progress(f"timings: steady state, loopback, modelled network, throughput (CPUs: {measured or 'any'})")
            results["calls"] = run_child("benchmarks.calls", endpoints_file, measured, env, telemetry="deployed",
                                         **profile["calls"])
            progress("timings: cold start, first answer of the app against its dependencies doing it raw")
            results["cold_start"] = coldstart.measure(app_env, modules_file, endpoints_file,
                                                      profile["cold_start_samples"], measured)
        progress("done")
    results["elapsed_s"] = time.monotonic() - started
    return results


def counts(profile: dict[str, Any], endpoints_file: Path, env: dict[str, str], scratch: Path) -> dict[str, Any]:
    """Instructions (callgrind, when it can run here) and memory: side by side, as neither depends on timing."""
    regimes = ("dropped", "every")  # most traces dropped, every trace kept
    unavailable = callgrind.available()
    children = []
    if unavailable:
        print(f"benchmarks: {unavailable}: no instruction counts", file=sys.stderr)
    else:
        for regime in regimes:
            (scratch / regime).mkdir()
            children.append(Child("benchmarks.instructions", {"telemetry": regime, **profile["instructions"]},
                                  prefix=callgrind.command(scratch / regime)))

    def memory() -> dict[str, Any]:
        app = run_child("benchmarks.memory", endpoints_file, None, env, kind="app", **profile["memory"])
        # The floor imports what the app had loaded when its memory was read (known only now).
        loaded_file = scratch / "memory-modules.json"
        loaded_file.write_text(json.dumps(app.pop("modules")), encoding="utf-8")
        floor = run_child("benchmarks.memory", endpoints_file, None, env, kind="floor",
                          modules_file=str(loaded_file), **profile["memory"])
        return {"app": app, "floor": floor}

    counted, found_memory = run_children_while(children, endpoints_file, None, env, meanwhile=memory)
    found: dict[str, Any] = {"unavailable": unavailable} if unavailable else {
        regime: {**result, "totals": callgrind.totals(scratch / regime)}
        for regime, result in zip(regimes, counted, strict=True)}
    return {"memory": found_memory, "instructions": found}


def machine() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "packages": versions}
