"""Child process: resident memory of the app after 1,000 calls, above the floor's, and its growth over 10,000.

    app    warmed by `first` invocations at concurrency 64 (connections open, token cached,
           telemetry configured and its instruments and attribute sets created), then the
           resident set is read; then `invocations` more, telemetry flushed, read again
    floor  the modules the app process had loaded at its first reading imported, except the
           app's own (libraries load some lazily: the exporter on its first export), one raw
           token request and `first` raw calls at concurrency 64 (benchmarks.floor)

Each reading follows a full garbage collection. The app above the floor is what it
costs to have the app loaded and running; growth is what a long-lived worker would
accumulate: a leak per invocation shows up as kilobytes times ten thousand.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import json
import os
import resource
import sys
from typing import Any

from benchmarks import host
from benchmarks.child import child_arguments, write_result
from benchmarks.coldstart import own_module
from benchmarks.floor import Floor
from benchmarks.measure import concurrent

CONCURRENCY = 64


def rss_bytes() -> int:
    """The current resident set (Linux: /proc); elsewhere the peak, which can only overstate growth."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def settled_rss_mb() -> float:
    gc.collect()
    return rss_bytes() / 2**20


async def run(proxy: host.Function, invocations: int) -> dict[str, int]:
    """`invocations` calls at concurrency 64, each one's request built as it starts, as the worker does.

    Not built beforehand: a thousand requests waiting in a list would be the benchmark's own
    memory, and the arenas they leave half-empty would be counted as the app's.
    """

    async def invoke(argument: tuple[Any, Any]) -> int:
        return (await proxy(*argument)).status_code

    arriving = ((host.http_request("GET", "status"), host.invocation_context()) for _ in range(invocations))
    _, seen = await concurrent(invoke, arriving, CONCURRENCY)
    return {str(status): number for status, number in seen.items()}


async def app(endpoints: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    host.configure_environment(endpoints, "deployed")
    host.install_worker_logging()
    proxy = host.load_functions()["apim_proxy"]
    from shared import runtime, telemetry

    statuses = await run(proxy, options["first"])
    telemetry.flush()
    after_first = settled_rss_mb()
    loaded = [name for name in sys.modules if not own_module(name)]
    more = await run(proxy, options["invocations"])
    telemetry.flush()
    after_more = settled_rss_mb()
    await runtime.reset_runtime()
    telemetry.shutdown()
    for status, number in more.items():
        statuses[status] = statuses.get(status, 0) + number
    return {"first": options["first"], "invocations": options["invocations"], "rss_after_first_mb": after_first,
            "rss_after_more_mb": after_more, "rss_growth_mb": after_more - after_first, "statuses": statuses,
            "modules": loaded}


def import_modules(modules_file: str) -> None:
    with open(modules_file, encoding="utf-8") as modules:
        for name in json.load(modules):
            try:
                importlib.import_module(name)
            except Exception:  # noqa: S112 - aliases that only their parent creates; the parent imported them
                continue


async def floor(endpoints: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    import_modules(options["modules_file"])
    raw = Floor(endpoints)
    await raw.prefetch_token()

    async def call(_: object) -> int:
        return await raw.call()

    _, seen = await concurrent(call, range(options["first"]), CONCURRENCY)
    rss = settled_rss_mb()
    await raw.close()
    return {"first": options["first"], "rss_after_first_mb": rss, "statuses": {str(k): v for k, v in seen.items()}}


def main() -> None:
    endpoints, options, result_path = child_arguments(__doc__.splitlines()[0])
    measure = app if options["kind"] == "app" else floor
    write_result(result_path, asyncio.run(measure(endpoints, options)))


if __name__ == "__main__":
    main()
