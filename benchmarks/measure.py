"""Timing helpers: sequential latency, throughput at a fixed concurrency, percentiles."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# One call of a variant: takes prepared arguments, returns the HTTP status it got.
Call = Callable[[Any], Awaitable[int]]


@dataclass
class Samples:
    """Latencies (seconds) and statuses of one variant, pooled over interleaved rounds."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)

    def summary(self) -> dict[str, Any]:
        return {
            "calls": len(self.latencies),
            "p50_ms": percentile(self.latencies, 50) * 1000,
            "p90_ms": percentile(self.latencies, 90) * 1000,
            "p99_ms": percentile(self.latencies, 99) * 1000,
            "mean_ms": sum(self.latencies) / len(self.latencies) * 1000,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
        }


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: a value that was actually observed."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


async def sequential(call: Call, arguments: Iterable[Any], samples: Samples) -> None:
    """One call at a time; each call's own latency."""
    for argument in arguments:
        started = time.perf_counter()
        status = await call(argument)
        samples.latencies.append(time.perf_counter() - started)
        samples.statuses[status] += 1


async def concurrent(call: Call, arguments: Sequence[Any], concurrency: int) -> tuple[float, Counter[int]]:
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
