"""Load: 2,000 invocations at concurrency 100 against the devstack.

Zero errors, exactly one token request per identity, and nothing left behind:
no unclosed aiohttp session or connector, no leaked task, no ResourceWarning.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import warnings
from typing import Any

import pytest

from shared import runtime
from tests.plugin import FUNCTIONS, http_request, invocation_context

proxy = FUNCTIONS["apim_proxy"]
ORDER = json.dumps({"item": "widget", "quantity": 1}).encode()
INVOCATIONS, CONCURRENCY, EVERY_NTH_IS_A_WRITE = 2000, 100, 4


@pytest.mark.filterwarnings("error::ResourceWarning")
async def test_2000_invocations_at_concurrency_100(use_stack, control, endpoints, caplog):
    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []  # what aiohttp reports for an unclosed session or connector
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: reported.append(context))
    gc.collect()  # earlier tests' garbage is theirs
    tasks_before = asyncio.all_tasks()
    try:
        await use_stack("reader")
        gate = asyncio.Semaphore(CONCURRENCY)

        async def invoke(i: int) -> int:
            async with gate:
                if i % EVERY_NTH_IS_A_WRITE == 0:
                    request = http_request("POST", "orders", body=ORDER, headers={"Content-Type": "application/json"})
                else:
                    request = http_request("GET", "status")
                return (await proxy(request, invocation_context())).status_code

        with caplog.at_level(logging.WARNING, logger="shared"):
            statuses = await asyncio.gather(*(invoke(i) for i in range(INVOCATIONS)))
        writes = INVOCATIONS // EVERY_NTH_IS_A_WRITE
        assert statuses.count(201) == writes and statuses.count(200) == INVOCATIONS - writes
        assert [r.getMessage() for r in caplog.records] == []  # no failure logged, not even a retried one

        stats = control.stats()
        identities = endpoints["identities"]
        assert stats["identity"]["by_client_id"] == {identities["reader"]["client_id"]: 1,
                                                     identities["writer"]["client_id"]: 1}
        assert stats["identity"]["token_requests"] == 2
        assert stats["apim"]["requests"] == INVOCATIONS  # no retry was needed
        assert stats["backend"]["by_method"] == {"GET": INVOCATIONS - writes, "POST": writes}

        await runtime.reset_runtime()  # what the worker's shutdown does: close the session and credentials
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            gc.collect()
            for _ in range(3):
                await asyncio.sleep(0)  # let closing transports finish their callbacks
            gc.collect()
        assert [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)] == []
        assert [c.get("message") for c in reported] == []
        assert asyncio.all_tasks() - tasks_before == set()
    finally:
        loop.set_exception_handler(previous_handler)
