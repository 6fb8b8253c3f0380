"""Child process: RSS growth of the app over 10,000 invocations.

After a warm-up (connections open, token cached, telemetry instruments and
their attribute sets created), the resident set is read; then 10,000 more
invocations run at concurrency 64, telemetry is flushed and garbage collected,
and it is read again. Growth here is what a long-lived worker would
accumulate: a leak per invocation shows up as kilobytes times ten thousand.
"""

from __future__ import annotations

import asyncio
import gc
import os
import resource
import sys
from typing import Any

from benchmarks import host
from benchmarks.child import child_arguments, write_result
from benchmarks.measure import concurrent

WARMUP_INVOCATIONS = 500
CHUNK = 1000  # invocations prepared at a time, so the prepared requests themselves stay small


def rss_bytes() -> int:
    """The current resident set (Linux: /proc); elsewhere the peak, which can only overstate growth."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


async def run(proxy: host.Function, invocations: int, concurrency: int) -> dict[str, int]:
    statuses: dict[str, int] = {}

    async def invoke(argument: tuple[Any, Any]) -> int:
        return (await proxy(*argument)).status_code

    remaining = invocations
    while remaining:
        count = min(CHUNK, remaining)
        prepared = [(host.http_request("GET", "status"), host.invocation_context()) for _ in range(count)]
        _, seen = await concurrent(invoke, prepared, concurrency)
        for status, number in seen.items():
            statuses[str(status)] = statuses.get(str(status), 0) + number
        remaining -= count
    return statuses


async def measure(endpoints: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    host.configure_environment(endpoints, "deployed")
    host.install_worker_logging()
    proxy = host.load_functions()["apim_proxy"]
    from shared import runtime, telemetry

    await run(proxy, WARMUP_INVOCATIONS, options["concurrency"])
    telemetry.flush()
    gc.collect()
    before = rss_bytes()
    statuses = await run(proxy, options["invocations"], options["concurrency"])
    telemetry.flush()
    gc.collect()
    after = rss_bytes()
    await runtime.reset_runtime()
    telemetry.shutdown()
    return {
        "invocations": options["invocations"],
        "concurrency": options["concurrency"],
        "rss_before_mb": before / 2**20,
        "rss_after_mb": after / 2**20,
        "rss_growth_mb": (after - before) / 2**20,
        "statuses": statuses,
    }


def main() -> None:
    endpoints, options, result_path = child_arguments(__doc__.splitlines()[0])
    write_result(result_path, asyncio.run(measure(endpoints, options)))


if __name__ == "__main__":
    main()
