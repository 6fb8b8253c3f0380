"""Child process: a burst of 1000 concurrent invocations on a cold process.

Nothing is warm: the app is imported here, no token is cached, no connection is
open, and every invocation starts at once. Every tenth call is a POST, so both
identities (the reader for GET, the writer for POST) face the storm. The
identity stand-in counts the token requests it served, by client ID; then a
second burst shows that no more are made while the token is outside its
refresh window.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from benchmarks import host
from benchmarks.child import child_arguments, write_result
from benchmarks.stack import Control

ORDER = json.dumps({"item": "storm widget", "quantity": 1}).encode()
JSON = {"Content-Type": "application/json"}


def invocation(number: int) -> tuple[Any, Any]:
    if number % 10 == 9:
        return host.http_request("POST", "orders", body=ORDER, headers=JSON), host.invocation_context()
    return host.http_request("GET", "status"), host.invocation_context()


async def burst(proxy: host.Function, count: int) -> tuple[float, dict[str, int]]:
    prepared = [invocation(number) for number in range(count)]
    started = time.perf_counter()
    responses = await asyncio.gather(*(proxy(request, context) for request, context in prepared))
    elapsed = time.perf_counter() - started
    statuses: dict[str, int] = {}
    for response in responses:
        statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
    return elapsed, statuses


def token_requests(control: Control, names: dict[str, str]) -> dict[str, int]:
    """Tokens issued per identity name, from the stand-in's counters."""
    by_client = control.stats().get("identity", {}).get("by_client_id", {})
    return {name: by_client.get(client_id, 0) for name, client_id in names.items()}


async def storm(endpoints: dict[str, Any], options: dict[str, Any]) -> dict[str, Any]:
    control = Control(endpoints["control_url"])
    host.configure_environment(endpoints, "deployed")
    host.install_worker_logging()
    proxy = host.load_functions()["apim_proxy"]
    from shared import runtime, telemetry
    from shared.tokens import REFRESH_MARGIN_SECONDS

    names = {name: endpoints["identities"][name]["client_id"] for name in ("reader", "writer")}
    control.reset()
    elapsed, statuses = await burst(proxy, options["invocations"])
    after_storm = token_requests(control, names)
    total_after_storm = control.stats().get("identity", {}).get("token_requests", 0)

    second_elapsed, second_statuses = await burst(proxy, options["invocations"])
    after_second = token_requests(control, names)

    token = await runtime.get_runtime().token_source("GET").get()
    lifetime = token.expires_on - time.time()
    refresh_in = (token.refresh_on or token.expires_on - min(REFRESH_MARGIN_SECONDS, lifetime / 2)) - time.time()
    await runtime.reset_runtime()
    telemetry.shutdown()
    return {
        "invocations": options["invocations"],
        "elapsed_s": elapsed,
        "statuses": statuses,
        "token_requests_by_identity": after_storm,
        "token_requests_total": total_after_storm,
        "second_burst": {"invocations": options["invocations"], "elapsed_s": second_elapsed,
                         "statuses": second_statuses,
                         "new_token_requests": {n: after_second[n] - after_storm[n] for n in names}},
        "token_lifetime_s": round(lifetime),
        "next_token_request_in_s": round(refresh_in),
    }


def main() -> None:
    endpoints, options, result_path = child_arguments(__doc__.splitlines()[0])
    write_result(result_path, asyncio.run(storm(endpoints, options)))


if __name__ == "__main__":
    main()
