"""Child process: client CPU, latency and connection counts per call; floor, app and naive interleaved.

    floor  benchmarks.floor: one raw aiohttp GET over a kept-alive session, token fetched beforehand
    app    the `apim_proxy` function invoked as the host would, telemetry exporting to the stand-in
    naive  benchmarks.naive: a new DefaultAzureCredential and session per invocation

APIM is the devstack's, over real TLS. Phases:

    steady    app calls only, after warm-up: token requests, new connections and TLS handshakes
              per call, counted by the stand-ins (sequential, then at concurrency 64)
    loopback  floor and app in rotation, call by call: client CPU and latency per call (no delay)
    network   for each modelled round trip (devstack/network.py; a new connection costs two more:
              TCP and TLS 1.3), floor, app and naive in rotation: latency and client CPU. A model.
    throughput  floor and app in alternating blocks at concurrency 64 (for reference, no target)

Client CPU is the process's CPU time across each call (`time.process_time_ns`),
so a call's share of the exporter threads shows up when they run during it; the
medians of many calls leave that out, the throughput blocks include it.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks import host
from benchmarks.child import child_arguments, write_result
from benchmarks.floor import Floor
from benchmarks.measure import Call, concurrent, median, percentile, rotated
from benchmarks.naive import NaiveFunction, NetworkAudit
from benchmarks.stack import Control

CONCURRENCY = 64
WARMUP_CALLS = 50
CONNECTION_RTTS = 2  # a new TLS connection: the TCP handshake and the TLS 1.3 handshake


@dataclass
class Samples:
    """Per-call wall time and client CPU (seconds) of one variant, and the statuses it got."""

    latencies: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {
            "calls": len(self.latencies),
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p90_ms": percentile(self.latencies, 90) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "cpu_us": median(self.cpu) * 1e6,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


async def timed(call: Call, argument: Any, samples: Samples) -> None:
    cpu, started = time.process_time(), time.perf_counter()
    status = await call(argument)
    samples.latencies.append(time.perf_counter() - started)
    samples.cpu.append(time.process_time() - cpu)
    samples.statuses[status] += 1


@dataclass(frozen=True)
class Variant:
    call: Call
    argument: Callable[[], Any]


async def measure(endpoints: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    settings = host.configure_environment(endpoints, options["telemetry"])
    worker_log = host.install_worker_logging()
    proxy = host.load_functions()["apim_proxy"]
    from shared import runtime, telemetry  # after the settings, as the worker imports the app

    control = Control(endpoints["control_url"])
    control.set_network(0, 0)
    floor = Floor(endpoints)
    await floor.prefetch_token()
    naive = NaiveFunction(settings)

    async def invoke_app(argument: tuple[Any, Any]) -> int:
        return (await proxy(*argument)).status_code

    async def invoke_naive(argument: tuple[Any, Any]) -> int:
        return (await naive(*argument)).status_code

    async def call_floor(_: object) -> int:
        return await floor.call()

    def invocation() -> tuple[Any, Any]:
        # Built before the clock starts: building the request is the host's work, not the app's.
        return host.http_request("GET", "status"), host.invocation_context()

    variants = {"floor": Variant(call_floor, lambda: None), "app": Variant(invoke_app, invocation),
                "naive": Variant(invoke_naive, invocation)}
    for name, variant in variants.items():  # warm-up: connections open, token cached, code paths hot
        for _ in range(3 if name == "naive" else WARMUP_CALLS):
            await timed(variant.call, variant.argument(), Samples())
    # Both pools full, so that no throughput block pays for opening up to 64 TLS connections.
    await concurrent(invoke_app, [invocation() for _ in range(4 * CONCURRENCY)], CONCURRENCY)
    await concurrent(call_floor, [None] * (4 * CONCURRENCY), CONCURRENCY)

    app_identities = [endpoints["identities"][name]["client_id"] for name in ("reader", "writer")]
    steady = await steady_state(control, variants["app"], options["steady_calls"], app_identities)
    records_before = worker_log.records
    loopback = await rotation({n: variants[n] for n in ("floor", "app")}, options["loopback_rounds"])
    app_log_records = worker_log.records - records_before
    audit = NetworkAudit()
    network = {}
    for rtt_ms, rounds in options["network"].items():
        control.set_network(float(rtt_ms), CONNECTION_RTTS * float(rtt_ms))
        audit.enabled = True
        network[rtt_ms] = {"rtt_ms": float(rtt_ms), "connection_ms": CONNECTION_RTTS * float(rtt_ms),
                           **await rotation(variants, rounds)}
        audit.enabled = False
    control.set_network(0, 0)
    throughput = await blocks({n: variants[n] for n in ("floor", "app")}, options, telemetry.flush)

    await floor.close()
    await runtime.reset_runtime()
    telemetry.shutdown()
    return {
        "telemetry": options["telemetry"],
        "telemetry_description": host.TELEMETRY[options["telemetry"]],
        "path": "GET /status",
        "steady_state": steady,
        "loopback": loopback,
        "network": network,
        "throughput": throughput,
        "app_log_records_per_call": app_log_records / loopback["app"]["calls"],
        "naive_hosts_contacted": sorted(audit.hosts),
        "naive_non_loopback_hosts": audit.non_loopback(),
    }


async def steady_state(control: Control, app: Variant, calls: int, identities: list[str]) -> dict[str, Any]:
    """What warm app calls cost in round trips: token requests, new connections and handshakes per call.

    Token requests are the app's identities' (the exporter gets a token of its own for ingestion).
    """
    found = {}
    for name, concurrency in (("sequential", 1), (f"concurrency_{CONCURRENCY}", CONCURRENCY)):
        prepared = [app.argument() for _ in range(calls)]
        control.reset()
        _, statuses = await concurrent(app.call, prepared, concurrency)
        stats = control.stats()
        found[name] = {
            "calls": calls,
            "token_requests_per_call": sum(stats.get("identity", {}).get("by_client_id", {}).get(client_id, 0)
                                           for client_id in identities) / calls,
            "new_connections_per_call": stats.get("apim", {}).get("connections", 0) / calls,
            "tls_handshakes_per_call": stats.get("apim", {}).get("tls_handshakes", 0) / calls,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
        }
    return found


async def rotation(variants: dict[str, Variant], rounds: int) -> dict[str, Any]:
    """One call of each variant per round, the order rotating, so drift and order effects cancel.

    Alternating single calls cancels drift at the finest grain: on a shared VM the
    speed of a loopback round trip wanders by tens of percent within seconds, and
    any block of calls would see its own weather.
    """
    samples = {name: Samples() for name in variants}
    for number in range(rounds):
        for name in rotated(list(variants), number):
            await timed(variants[name].call, variants[name].argument(), samples[name])
    return {name: found.summary() for name, found in samples.items()}


async def blocks(variants: dict[str, Variant], options: dict[str, Any],
                 flush: Callable[[], None]) -> dict[str, Any]:
    """Throughput at concurrency 64 in alternating blocks; each block's own telemetry flush is timed."""
    rates: dict[str, list[float]] = {name: [] for name in variants}
    statuses: dict[str, Counter[int]] = {name: Counter() for name in variants}
    for round_number in range(options["throughput_rounds"]):
        for name in rotated(list(variants), round_number):
            prepared = [variants[name].argument() for _ in range(options["throughput_calls"])]
            flush()  # untimed: whatever came before is exported now, not during this block
            started = time.perf_counter()
            _, seen = await concurrent(variants[name].call, prepared, CONCURRENCY)
            flush()  # timed: the export work this block caused is part of its cost
            rates[name].append(len(prepared) / (time.perf_counter() - started))
            statuses[name].update(seen)
    by_round = [app / floor for app, floor in zip(rates["app"], rates["floor"], strict=True)]
    return {
        "concurrency": CONCURRENCY,
        "calls_per_block": options["throughput_calls"],
        "ratio_by_round": [round(ratio, 3) for ratio in by_round],
        "ratio": median(by_round),  # adjacent blocks compared, so slow drift cancels
        **{name: {"rounds_rps": [round(rate, 1) for rate in rates[name]], "median_rps": median(rates[name]),
                  "statuses": {str(k): v for k, v in sorted(statuses[name].items())}} for name in variants},
    }


def main() -> None:
    endpoints, options, result_path = child_arguments(__doc__.splitlines()[0])
    write_result(result_path, asyncio.run(measure(endpoints, options)))


if __name__ == "__main__":
    main()
