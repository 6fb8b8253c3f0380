"""`python -m benchmarks [--quick] [--out results.json] [--check] [--no-pin]`: the app against one round trip.

Starts the devstack in its own process, runs each measurement in a fresh child
process against it, prints a table of the ratios against their targets, and
writes everything measured as JSON.

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

from benchmarks import coldstart, host, report
from benchmarks.child import ChildError, run_child
from benchmarks.stack import StackError, StackProcess

# How much of each measurement a run does. `quick` fits in a minute on two cores; the full
# run takes about three and gives steadier tails. Per telemetry mode (benchmarks.host.TELEMETRY):
# `rounds` sequential rounds of one floor, app and lean call, `naive_calls` naive calls spread among them, and
# `throughput_rounds` rounds of one floor and one app block of `throughput_calls` at c=64.
PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "deployed": {"rounds": 800, "naive_calls": 30, "throughput_rounds": 14, "throughput_calls": 150},
        "every": {"rounds": 300, "naive_calls": 0, "throughput_rounds": 6, "throughput_calls": 150},
        "cold_start_samples": 5,
        "memory_invocations": 10_000,
    },
    "full": {
        "deployed": {"rounds": 5000, "naive_calls": 150, "throughput_rounds": 40, "throughput_calls": 300},
        "every": {"rounds": 3000, "naive_calls": 0, "throughput_rounds": 20, "throughput_calls": 300},
        "off": {"rounds": 3000, "naive_calls": 0, "throughput_rounds": 20, "throughput_calls": 300},
        "cold_start_samples": 15,
        "memory_invocations": 10_000,
    },
}
PATH = "status"  # GET /status on the sample API: the cheapest call, so the app's overhead shows most
STORM_INVOCATIONS = 1000
CONCURRENCY = 64
PACKAGES = ("azure-functions", "azure-core", "azure-identity", "aiohttp", "opentelemetry-sdk",
            "azure-monitor-opentelemetry", "azure-monitor-opentelemetry-exporter",
            "opentelemetry-instrumentation-aiohttp-client")


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

    results: dict[str, Any] = {"calls": {}, "cpus": cpus}
    with tempfile.TemporaryDirectory(prefix="benchmarks-") as scratch:
        progress(f"starting the devstack in its own process (CPUs: {cpus['devstack'] or 'any'})")
        with StackProcess(Path(scratch) / "devstack", cpus["devstack"]) as stack:
            endpoints_file = stack.state_dir / "endpoints.json"
            for telemetry in ("deployed", "every", "off"):
                if telemetry not in profile:
                    continue
                progress(f"floor / app{' / naive' if profile[telemetry]['naive_calls'] else ''}, interleaved "
                         f"(app telemetry: {telemetry}; CPUs: {measured or 'any'})")
                results["calls"][telemetry] = run_child("benchmarks.calls", endpoints_file, measured,
                                                        telemetry=telemetry, path=PATH, **profile[telemetry])
            progress(f"token storm: {STORM_INVOCATIONS} concurrent invocations on a cold process")
            results["storm"] = run_child("benchmarks.storm", endpoints_file, measured, invocations=STORM_INVOCATIONS)
            progress(f"memory: {profile['memory_invocations']:,} invocations")
            results["memory"] = run_child("benchmarks.memory", endpoints_file, measured,
                                          invocations=profile["memory_invocations"], concurrency=CONCURRENCY)
            progress("cold start: import function_app vs its dependencies")
            results["cold_start"] = coldstart.measure(host.settings_for(stack.endpoints),
                                                      profile["cold_start_samples"], measured)
        progress("done")
    results["elapsed_s"] = time.monotonic() - started
    return results


def machine() -> dict[str, Any]:
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "packages": versions}
