"""Two time limits of an APIM call on one timer: the whole call's budget, and each attempt's.

`CallDeadlinePolicy` (first in the pipeline, outside the retries) bounds the call:
retries, their waits, a token fetch and a 401 renewal included. `AttemptDeadlinePolicy`
(inside the retries) bounds each send from the request to the last byte of the answer,
a new connection's set-up included. The transport sets no per-read timeout: it would be
re-armed on every chunk, and a body that trickles in a byte at a time would never trip
it (its connect timeout still bounds connecting). A send past its deadline is a read
timeout for azure-core's retry policy (retried for reads while the budget lasts, not
for writes); a call past its budget is a timeout, never retried.

Not two `asyncio.timeout()`s: they arm, cancel and discard two timers per call, which
measured (benchmarks/) as much as a quarter of the pipeline's own steps. Here one timer
is armed for the earliest moment either limit could fall due; should it fire before
the limit then in force, it re-arms itself for that limit. A call that ends in time,
as nearly all do, costs one timer and its cancellation.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from azure.core.exceptions import ServiceResponseTimeoutError
from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import AsyncHTTPPolicy

__all__ = ["AttemptDeadlinePolicy", "CallDeadline", "CallDeadlinePolicy"]

CONTEXT_KEY = "call_deadline"  # where the call's CallDeadline is, in azure-core's pipeline context


class CallDeadline:
    """The call's budget and its current attempt's limit, for the task running the call."""

    def __init__(self, budget: float, attempt: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("CallDeadline needs a task to cancel")
        self._task = task
        self._cancelling = task.cancelling()  # cancellations already requested are not ours
        now = self._loop.time()
        self.ends = now + budget
        self.attempt = attempt
        self._attempt_ends = math.inf  # no attempt under way
        self.expired: str | None = None  # "call" or "attempt", once that limit has cancelled the task
        # No attempt can start before now, so none can end before now + attempt: the earliest moment to look.
        self._timer: asyncio.TimerHandle | None = self._loop.call_at(min(self.ends, now + attempt), self._wake)

    def _wake(self) -> None:
        now = self._loop.time()
        due = min(self.ends, self._attempt_ends)
        if now < due:
            self._timer = self._loop.call_at(due, self._wake)
            return
        self._timer = None
        self.expired = "call" if now >= self.ends else "attempt"
        self._task.cancel()

    def start_attempt(self) -> None:
        self._attempt_ends = self._loop.time() + self.attempt
        if self._timer is not None and self._attempt_ends < self._timer.when():
            self._rearm(self._attempt_ends)  # only after a wake re-armed for the budget: a retry, say

    def end_attempt(self) -> None:
        self._attempt_ends = math.inf  # the timer may still be set for it: it re-arms when it fires

    def claim(self, expired: str) -> bool:
        """After a CancelledError: True if it is this deadline's `expired` limit alone, now taken back."""
        if self.expired != expired:
            return False
        self.expired = None
        if self._task.uncancel() > self._cancelling:
            return False  # the task was cancelled from outside as well: that cancellation goes on
        if expired == "attempt":
            self._rearm(self.ends)  # the budget still holds for what follows (a retry, its wait)
        return True

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _rearm(self, when: float) -> None:
        self.close()
        self._timer = self._loop.call_at(when, self._wake)


class CallDeadlinePolicy(AsyncHTTPPolicy[Any, Any]):
    """Bounds the whole call at `budget` seconds and hands each attempt `attempt` seconds of it."""

    def __init__(self, budget: float, attempt: float) -> None:
        super().__init__()
        self.budget = budget
        self.attempt = attempt

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        deadline = CallDeadline(self.budget, self.attempt)
        request.context[CONTEXT_KEY] = deadline
        try:
            return await self.next.send(request)
        except asyncio.CancelledError:
            # "attempt" too: its cancellation can land just after the attempt ended, outside its policy.
            if not (deadline.claim("call") or deadline.claim("attempt")):
                raise
        finally:
            deadline.close()
        raise ServiceResponseTimeoutError("No complete answer within the call's total budget.")


class AttemptDeadlinePolicy(AsyncHTTPPolicy[Any, Any]):
    """Bounds each send at the attempt limit of the call's CallDeadline, which CallDeadlinePolicy put in context."""

    async def send(self, request: PipelineRequest[Any]) -> PipelineResponse[Any, Any]:
        deadline: CallDeadline | None = request.context.get(CONTEXT_KEY)
        if deadline is None:
            raise RuntimeError("AttemptDeadlinePolicy needs CallDeadlinePolicy before it, outside the retries")
        deadline.start_attempt()
        try:
            return await self.next.send(request)
        except asyncio.CancelledError:
            if not deadline.claim("attempt"):
                raise
        finally:
            deadline.end_attempt()
        raise ServiceResponseTimeoutError("No complete answer within the read timeout.")
