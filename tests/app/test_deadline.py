"""The call's budget and each attempt's limit on one timer (shared/deadline.py), on a pipeline with a fake transport."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from azure.core.exceptions import ServiceResponseTimeoutError
from azure.core.pipeline import AsyncPipeline
from azure.core.pipeline.policies import AsyncRetryPolicy
from azure.core.pipeline.transport import AsyncHttpTransport, HttpRequest

from shared.deadline import AttemptDeadlinePolicy, CallDeadline, CallDeadlinePolicy


class Answer:
    def __init__(self, request: HttpRequest) -> None:
        self.request, self.status_code, self.headers = request, 200, {}


class SlowTransport(AsyncHttpTransport):
    """Takes `delays[n]` seconds over the n-th request (the last one for every later request)."""

    def __init__(self, *delays: float) -> None:
        self.delays, self.started = list(delays), []

    async def send(self, request: HttpRequest, **kwargs: Any) -> Any:
        self.started.append(asyncio.get_running_loop().time())
        await asyncio.sleep(self.delays[min(len(self.started), len(self.delays)) - 1])
        return Answer(request)

    async def open(self) -> None: ...
    async def close(self) -> None: ...
    async def __aexit__(self, *args: Any) -> None: ...


def pipeline(transport: SlowTransport, *, budget: float, attempt: float, retries: int = 3) -> AsyncPipeline:
    return AsyncPipeline(transport=transport, policies=[
        CallDeadlinePolicy(budget, attempt),
        AsyncRetryPolicy(retry_total=retries, retry_backoff_factor=0, timeout=budget),
        AttemptDeadlinePolicy()])


async def run(transport: SlowTransport, **limits: float) -> Any:
    return await pipeline(transport, **limits).run(HttpRequest("GET", "https://contoso.azure-api.net/orders/status"))


def scheduled_wakes() -> list[asyncio.TimerHandle]:
    loop = asyncio.get_running_loop()
    return [h for h in loop._scheduled if not h.cancelled() and getattr(h._callback, "__self__", None).__class__
            is CallDeadline]


async def test_a_call_in_time_leaves_no_timer_and_no_cancellation_behind():
    result = await run(SlowTransport(0.01), budget=5, attempt=1)
    assert result.http_response.status_code == 200
    assert scheduled_wakes() == []
    assert asyncio.current_task().cancelling() == 0


async def test_a_slow_attempt_times_out_as_a_read_and_is_retried_until_one_is_in_time():
    transport = SlowTransport(5, 5, 0.01)
    result = await run(transport, budget=20, attempt=0.2)  # two attempts cut at 0.2 s, not waited out
    assert result.http_response.status_code == 200
    assert len(transport.started) == 3
    assert asyncio.current_task().cancelling() == 0
    assert scheduled_wakes() == []


async def test_the_budget_ends_the_call_however_many_attempts_remain():
    transport = SlowTransport(5)
    with pytest.raises(ServiceResponseTimeoutError):
        await run(transport, budget=0.5, attempt=0.3, retries=10)
    assert len(transport.started) == 2  # the second attempt was cut by the budget (0.5 s), not by its limit
    assert asyncio.current_task().cancelling() == 0


async def test_an_attempt_limit_longer_than_the_budget_is_cut_at_the_budget():
    with pytest.raises(ServiceResponseTimeoutError):  # else the answer would come, after 5 s
        await run(SlowTransport(5), budget=0.3, attempt=10)


async def test_a_cancellation_from_outside_is_not_taken_for_a_timeout():
    call = asyncio.ensure_future(run(SlowTransport(5), budget=10, attempt=5))
    await asyncio.sleep(0.1)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert scheduled_wakes() == []


async def test_a_cancellation_from_outside_as_the_attempt_times_out_still_cancels():
    async def cancelled_as_the_limit_falls_due() -> Any:
        task = asyncio.current_task()
        asyncio.get_running_loop().call_later(0.2, task.cancel)  # the same moment as the attempt limit
        return await run(SlowTransport(5), budget=10, attempt=0.2)

    with pytest.raises(asyncio.CancelledError):
        await asyncio.ensure_future(cancelled_as_the_limit_falls_due())


async def test_an_early_wake_re_arms_for_the_limit_then_in_force():
    deadline = CallDeadline(budget=0.4, attempt=0.1)  # armed for 0.1 s: no attempt could end sooner
    try:
        await asyncio.sleep(0.2)  # no attempt under way when it wakes: it re-arms for the budget
        assert deadline.expired is None
        with pytest.raises(asyncio.CancelledError):
            await asyncio.sleep(1)
        assert deadline.expired == "call"
        assert deadline.claim("call")
    finally:
        deadline.close()
    assert asyncio.current_task().cancelling() == 0
