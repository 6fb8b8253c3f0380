"""Child process, run under callgrind: instructions per call, the floor's and the app's.

Everything is warmed up uninstrumented (imports, connections, the token, code
paths); then callgrind counts `calls` floor calls, then `calls` app calls, each
batch in a dump of its own (benchmarks.callgrind). With every trace kept, a
third dump counts the export of the spans those app calls made (the exporter
runs in background threads; here it is deferred to a flush so that it can be
told from the call path). The invocations' arguments are built before counting
starts: building them is the host's work.
"""

from __future__ import annotations

import asyncio
import gc
import os
from typing import Any

from benchmarks import host
from benchmarks.callgrind import Markers
from benchmarks.child import child_arguments, write_result
from benchmarks.floor import Floor

WARMUP_CALLS = 15


async def measure(endpoints: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    markers = Markers()
    if not markers.running_on_valgrind:
        raise RuntimeError("benchmarks.instructions must run under valgrind --tool=callgrind")
    host.configure_environment(endpoints, options["telemetry"])
    os.environ.update(host.DEFERRED_EXPORT)
    proxy = host.load_functions()["apim_proxy"]
    from shared import runtime, telemetry

    floor = Floor(endpoints)
    await floor.prefetch_token()
    calls = options["calls"]
    statuses: dict[str, set[int]] = {"floor": set(), "app": set()}

    def arguments(count: int) -> list[tuple[Any, Any]]:
        return [(host.http_request("GET", "status"), host.invocation_context()) for _ in range(count)]

    async def app_calls(prepared: list[tuple[Any, Any]]) -> None:
        for argument in prepared:
            statuses["app"].add((await proxy(*argument)).status_code)

    async def floor_calls(count: int) -> None:
        for _ in range(count):
            statuses["floor"].add(await floor.call())

    await floor_calls(WARMUP_CALLS)
    await app_calls(arguments(WARMUP_CALLS))
    telemetry.flush()  # the warm-up's spans exported now, uncounted
    markers.start()
    await floor_calls(3)  # the first instrumented calls run no differently; this only settles callgrind
    await app_calls(arguments(3))
    telemetry.flush()
    gc.collect()
    markers.zero()
    await floor_calls(calls)
    markers.dump("floor")
    prepared = arguments(calls)  # the host's work, outside the count
    gc.collect()
    markers.zero()
    await app_calls(prepared)
    markers.dump("app")
    if options["telemetry"] == "every":
        gc.collect()
        markers.zero()
        from opentelemetry import trace

        trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
        markers.dump("export")
    await floor.close()
    await runtime.reset_runtime()
    telemetry.shutdown()
    return {"telemetry": options["telemetry"], "calls": calls,
            "statuses": {name: sorted(seen) for name, seen in statuses.items()}}


def main() -> None:
    endpoints, options, result_path = child_arguments(__doc__.splitlines()[0])
    write_result(result_path, asyncio.run(measure(endpoints, options)))


if __name__ == "__main__":
    main()
