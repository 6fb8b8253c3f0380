"""Timing helpers: calls at a fixed concurrency, percentiles, rotation."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

# One call of a variant: takes prepared arguments, returns the HTTP status it got.
Call = Callable[[Any], Awaitable[int]]


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


async def concurrent(call: Call, arguments: Iterable[Any], concurrency: int) -> tuple[float, Counter[int]]:
    """All `arguments` through `concurrency` workers; the wall time and the statuses."""
    pending = iter(arguments)
    statuses: Counter[int] = Counter()

    async def worker() -> None:
        for argument in pending:  # one shared iterator: each argument is taken exactly once
            statuses[await call(argument)] += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, statuses


def rotated(items: Sequence[Any], by: int) -> list[Any]:
    """`items` starting at position `by`: each round starts with another variant, so order effects cancel."""
    by %= len(items)
    return [*items[by:], *items[:by]]
