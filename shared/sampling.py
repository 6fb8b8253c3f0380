"""The Azure Monitor distro's default sampler, deciding exactly as it does for a fraction of the cost.

The distro keeps about 5 traces a second by default (`RateLimitedSampler`): a span
with no parent in this process (the Functions host's trace parent is remote) is kept
when the sampling score of its trace ID, a DJB2 hash of its hex digits scaled to
0-100, is below the current sampling percentage. The distro hashes one digit at a time
in Python integers, which measured (benchmarks/) at about 90k instructions per call:
as much as the rest of the dependency span. `faster()` wraps that sampler with the same
rules, the same rate state and the same score, computed in one pass. Anything else
(another sampler, a distro without these modules) is left as it is.
"""

from __future__ import annotations

import operator
from array import array
from collections.abc import Sequence
from typing import Any

from opentelemetry.context import Context
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, TraceState, get_current_span
from opentelemetry.util.types import Attributes

try:  # the distro's own pieces: the sampler, its parent rule, its attribute name
    from azure.monitor.opentelemetry.exporter._constants import _SAMPLE_RATE_KEY
    from azure.monitor.opentelemetry.exporter.export.trace._rate_limited_sampling import RateLimitedSampler
    from azure.monitor.opentelemetry.exporter.export.trace._utils import _get_DJB2_sample_score, parent_context_sampling
except ImportError:  # pragma: no cover - an older distro: its sampler stays as it is
    RateLimitedSampler = None  # type: ignore[assignment,misc]

__all__ = ["FasterRateLimitedSampler", "faster", "sampling_score", "score_of_hash"]

_DJB2_SEED = 5381
_MASK, _SIGN = 2**32 - 1, 2**31
_INT32_MAX = 2**31 - 1
_HEX = b"0123456789abcdef"
# DJB2 is h = h * 33 + c per character, kept to 32 bits (signed) at each step. Kept to 32 bits only at the
# end, the result is the same: seed * 33**32 + sum(c_i * 33**(31 - i)) modulo 2**32, over the 32 hex digits.
# So each byte of the trace ID (two digits) adds a fixed term: a table of 256 per byte (16 KB in all as
# arrays, a tenth of tuples' size), 16 lookups a span.
_WEIGHTS = [pow(33, 31 - i, 2**32) for i in range(32)]
_SEEDED = _DJB2_SEED * pow(33, 32, 2**32) & _MASK
_BYTE_TERMS = [array("I", ((_WEIGHTS[2 * i] * _HEX[b >> 4] + _WEIGHTS[2 * i + 1] * _HEX[b & 15]) & _MASK
                           for b in range(256))) for i in range(16)]


def sampling_score(trace_id: int) -> float:
    """The distro's sampling score (0 to 1) of a trace ID: |DJB2 of its 32 hex digits, as int32| / (2**31 - 1)."""
    return score_of_hash(_SEEDED + sum(map(operator.getitem, _BYTE_TERMS, trace_id.to_bytes(16, "big"))))


def score_of_hash(value: int) -> float:
    """The score of a DJB2 hash (any integer, read modulo 2**32 as a signed 32-bit one), as the distro scales it."""
    value &= _MASK
    if value >= _SIGN:
        value -= 2**32
    return (_INT32_MAX if value == -_SIGN else abs(value)) / _INT32_MAX


class FasterRateLimitedSampler(Sampler):
    """The distro's RateLimitedSampler `sampler`: its rate state, its rules, the same score in one pass."""

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self._percentage = sampler._sampling_percentage_generator  # the same state: one rate limit, not two
        self._fell_back = False

    def should_sample(self, parent_context: Context | None, trace_id: int, name: str,
                      kind: SpanKind | None = None, attributes: Attributes = None,
                      links: Sequence[Link] | None = None, trace_state: TraceState | None = None) -> SamplingResult:
        if not self._fell_back:
            try:
                return self._decide(parent_context, trace_id, attributes)
            except Exception:  # a changed private piece of the distro: its own sampler decides from now on
                self._fell_back = True
        result: SamplingResult = self.sampler.should_sample(parent_context, trace_id, name, kind, attributes, links,
                                                            trace_state)
        return result

    def _decide(self, parent_context: Context | None, trace_id: int, attributes: Attributes) -> SamplingResult:
        if parent_context is not None:
            decided = parent_context_sampling(parent_context, attributes)  # a parent in this process decides
            if decided is not None:
                return decided
        percentage = self._percentage.get()
        kept = sampling_score(trace_id) * 100.0 < percentage
        sampled_attributes = dict(attributes or {})
        if percentage != 100.0:
            sampled_attributes[_SAMPLE_RATE_KEY] = percentage
        return SamplingResult(Decision.RECORD_AND_SAMPLE if kept else Decision.DROP, sampled_attributes,
                              _parent_trace_state(parent_context))

    def get_description(self) -> str:
        return str(self.sampler.get_description())


def _parent_trace_state(parent_context: Context | None) -> TraceState | None:
    parent = get_current_span(parent_context).get_span_context()
    return parent.trace_state if parent is not None and parent.is_valid else None


def faster(sampler: Sampler) -> Sampler:
    """`sampler` wrapped in FasterRateLimitedSampler if it is the distro's RateLimitedSampler and this
    module still scores as it does (the pieces used are the distro's private ones); else itself."""
    if RateLimitedSampler is None or type(sampler) is not RateLimitedSampler:
        return sampler
    if not hasattr(sampler, "_sampling_percentage_generator") or not _scores_as_the_distro():
        return sampler
    return FasterRateLimitedSampler(sampler)


# Trace IDs to check the score against the distro's once, at set-up: the edges and a few others.
_CHECKED_TRACE_IDS = (1, 2**128 - 1, 0x0AF7651916CD43DD8448EB211C80319C, 0x80000000000000000000000000000000,
                      0x00F067AA0BA902B7FFFFFFFFFFFFFFFF)


def _scores_as_the_distro() -> bool:
    try:
        return all(sampling_score(trace_id) == _get_DJB2_sample_score(f"{trace_id:032x}")
                   for trace_id in _CHECKED_TRACE_IDS)
    except Exception:  # any change in the distro's private pieces: keep its own sampler
        return False
