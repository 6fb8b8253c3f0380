"""Child process: the floor, this app, the naive baseline and the lean reference, interleaved in one process.

    floor  a raw aiohttp GET over one kept-alive session, token fetched beforehand, key set
    app    the `apim_proxy` function invoked as the host would, telemetry exporting to the stand-in
    naive  benchmarks.naive: a new DefaultAzureCredential and session per invocation
    lean   benchmarks.lean: the app's happy path by hand, for reference (no targets)

Sequential latency rotates floor, app and lean call by call (see `alternating`).
Throughput at concurrency 64 alternates blocks of calls, each preceded by an
untimed telemetry flush and ended by a timed one, so that the app pays for the
export work it caused and no block runs another's exports.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from benchmarks import host
from benchmarks.child import child_arguments, write_result
from benchmarks.lean import LeanFunction
from benchmarks.measure import Call, Samples, concurrent, median, rotated, sequential
from benchmarks.naive import NaiveFunction, NetworkAudit

CONCURRENCY = 64
WARMUP_CALLS = 50


class Floor:
    """The limit for one call: one request over a kept-alive session with the token already in hand."""

    def __init__(self, endpoints: dict[str, Any]) -> None:
        self.endpoints = endpoints
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=60))
        self.headers: dict[str, str] = {}

    async def prefetch_token(self, identity: str = "reader") -> None:
        """One token from the identity stand-in, as the App Service managed-identity protocol gives it."""
        e = self.endpoints
        params = {"api-version": "2019-08-01", "resource": e["api_app_id_uri"],
                  "client_id": e["identities"][identity]["client_id"]}
        async with self.session.get(e["identity_endpoint"], params=params,
                                    headers={"X-IDENTITY-HEADER": e["identity_header"]}) as response:
            response.raise_for_status()
            token = (await response.json())["access_token"]
        self.headers = {"Authorization": f"Bearer {token}", "Ocp-Apim-Subscription-Key": e["subscription_key"]}

    async def call(self, path: str) -> int:
        async with self.session.get(f"{self.endpoints['apim_base_url']}/{path}", headers=self.headers) as response:
            await response.read()
            return response.status

    async def close(self) -> None:
        await self.session.close()


async def measure(endpoints: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    settings = host.configure_environment(endpoints, options["telemetry"])
    worker_log = host.install_worker_logging()
    proxy = host.load_functions()["apim_proxy"]
    from shared import runtime, telemetry  # after the settings, as the worker imports the app

    path = options["path"]
    floor = Floor(endpoints)
    await floor.prefetch_token()
    naive = NaiveFunction(settings)
    lean = LeanFunction()

    async def invoke_app(argument: tuple[Any, Any]) -> int:
        return (await proxy(*argument)).status_code

    async def invoke_naive(argument: tuple[Any, Any]) -> int:
        return (await naive(*argument)).status_code

    async def invoke_lean(argument: tuple[Any, Any]) -> int:
        return (await lean(*argument)).status_code

    async def call_floor(_: object) -> int:
        return await floor.call(path)

    def invocation() -> tuple[Any, Any]:
        # Built before the clock starts: building the request is the host's work, not the app's.
        return host.http_request("GET", path), host.invocation_context()

    variants = {"floor": Variant(call_floor, lambda: None), "app": Variant(invoke_app, invocation),
                "lean": Variant(invoke_lean, invocation)}
    if options["naive_calls"]:
        variants["naive"] = Variant(invoke_naive, invocation)
    for name, variant in variants.items():  # warm-up: connections open, token cached, code paths hot
        await sequential(variant.call, [variant.argument() for _ in range(3 if name == "naive" else WARMUP_CALLS)],
                         Samples())

    audit = NetworkAudit()
    latency, app_log_records = await alternating(variants, options, audit, worker_log)
    throughput = await blocks({name: variants[name] for name in ("floor", "app")}, options, telemetry.flush)

    await floor.close()
    await lean.close()
    await runtime.reset_runtime()
    telemetry.shutdown()
    app_calls = len(latency["app"].latencies)
    return {
        "telemetry": options["telemetry"],
        "telemetry_description": host.TELEMETRY[options["telemetry"]],
        "telemetry_configured_by": telemetry.configure(),
        "path": f"GET /{path}",
        "sequential": {name: samples.summary() for name, samples in latency.items()},
        "throughput": throughput,
        "app_log_records_per_call": app_log_records / app_calls,
        "naive_hosts_contacted": sorted(audit.hosts),
        "naive_non_loopback_hosts": audit.non_loopback(),
    }


@dataclass(frozen=True)
class Variant:
    call: Call
    argument: Callable[[], Any]


async def alternating(variants: dict[str, Variant], options: dict[str, Any], audit: NetworkAudit,
                      worker_log: host.WorkerLogHandler) -> tuple[dict[str, Samples], int]:
    """Sequential latency, floor, app and lean in rotation call by call (naive every few rounds).

    Alternating single calls cancels drift at the finest grain: on a shared VM the
    speed of a loopback round trip wanders by tens of percent within seconds, and
    any block of calls would see its own weather. Background work (telemetry export)
    lands on every variant alike, so its CPU cost is charged in the throughput blocks instead.
    """
    latency = {name: Samples() for name in variants}
    rounds = options["rounds"]
    naive_every = rounds // options["naive_calls"] if options["naive_calls"] else 0
    app_log_records = 0
    in_rotation = [name for name in variants if name != "naive"]
    for number in range(rounds):
        for name in rotated(in_rotation, number):
            argument = variants[name].argument()
            records_before = worker_log.records
            await sequential(variants[name].call, [argument], latency[name])
            if name == "app":
                app_log_records += worker_log.records - records_before
        if naive_every and number % naive_every == naive_every // 2:
            audit.enabled = True
            await sequential(variants["naive"].call, [variants["naive"].argument()], latency["naive"])
            audit.enabled = False
    return latency, app_log_records


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
