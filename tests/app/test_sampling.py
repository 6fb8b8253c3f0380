"""shared/sampling.py decides exactly as the distro's RateLimitedSampler: same score, same rules, same rate state."""

from __future__ import annotations

import random

import pytest
from azure.monitor.opentelemetry.exporter.export.trace._rate_limited_sampling import RateLimitedSampler
from azure.monitor.opentelemetry.exporter.export.trace._utils import _get_DJB2_sample_score
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags, TraceState

from shared import sampling, telemetry
from shared.sampling import FasterRateLimitedSampler, faster, sampling_score, score_of_hash

RANDOM = random.Random(20261201)
TRACE_IDS = [0, 1, 2**128 - 1, 0x0AF7651916CD43DD8448EB211C80319C, *(RANDOM.getrandbits(128) for _ in range(3000))]


@pytest.mark.parametrize("trace_id", TRACE_IDS[:4])
def test_the_score_of_edge_trace_ids_is_the_distros(trace_id):
    assert sampling_score(trace_id) == _get_DJB2_sample_score(f"{trace_id:032x}")


def test_the_score_of_random_trace_ids_is_the_distros():
    for trace_id in TRACE_IDS:
        assert sampling_score(trace_id) == _get_DJB2_sample_score(f"{trace_id:032x}"), f"{trace_id:032x}"


def test_the_one_hash_abs_cannot_take_scores_as_the_distro_scores_it():
    # 31 digits, then the one character that brings the 32-bit hash to -2**31 (abs() of which overflows int32).
    while True:
        prefix = "".join(RANDOM.choice("0123456789abcdef") for _ in range(31))
        needed = (-(2**31) - (sampling_hash_of(prefix + "\0"))) % 2**32
        if needed < 0x110000 and not 0xD800 <= needed < 0xE000:
            break
    digits = prefix + chr(needed)
    assert score_of_hash(sampling_hash_of(digits)) == _get_DJB2_sample_score(digits) == 1.0
    assert score_of_hash(sampling_hash_of("0" * 32)) == _get_DJB2_sample_score("0" * 32)


def sampling_hash_of(text: str) -> int:
    value = 5381
    for char in text:
        value = (value * 33 + ord(char)) % 2**32
    return value


class FixedPercentage:
    def __init__(self, percentage: float) -> None:
        self.percentage, self.calls = percentage, 0

    def get(self) -> float:
        self.calls += 1
        return self.percentage


def samplers(percentage: float) -> tuple[RateLimitedSampler, FasterRateLimitedSampler]:
    distro, wrapped = RateLimitedSampler(5.0), RateLimitedSampler(5.0)
    distro._sampling_percentage_generator = FixedPercentage(percentage)
    wrapped._sampling_percentage_generator = FixedPercentage(percentage)
    return distro, FasterRateLimitedSampler(wrapped)


def parents() -> list[object]:
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True,
                         trace_flags=TraceFlags(1), trace_state=TraceState([("congo", "t61rcWkgMzE")]))
    provider = TracerProvider(sampler=ALWAYS_ON)
    kept = provider.get_tracer("test").start_span("kept", attributes={"_MS.sampleRate": 25.0})  # recording: not ended
    recording = trace.set_span_in_context(kept)
    dropped = SpanContext(0x1234, 0x5678, is_remote=False, trace_flags=TraceFlags(0))
    return [None, trace.set_span_in_context(NonRecordingSpan(remote)), recording,
            trace.set_span_in_context(NonRecordingSpan(dropped))]


@pytest.mark.parametrize("percentage", [0.0, 4.0, 50.0, 100.0])
@pytest.mark.parametrize("parent", range(4))
@pytest.mark.parametrize("attributes", [None, {"http.request.method": "GET"}])
def test_each_decision_is_the_distros(percentage, parent, attributes):
    distro, ours = samplers(percentage)
    context = parents()[parent]
    for trace_id in TRACE_IDS[:300]:
        expected = distro.should_sample(context, trace_id, "GET", SpanKind.CLIENT, attributes)
        got = ours.should_sample(context, trace_id, "GET", SpanKind.CLIENT, attributes)
        assert (got.decision, dict(got.attributes or {})) == (expected.decision, dict(expected.attributes or {}))
        assert (got.trace_state.to_header() if got.trace_state is not None else None) == (
            expected.trace_state.to_header() if expected.trace_state is not None else None)
    assert ours._percentage.calls == distro._sampling_percentage_generator.calls  # the rate state advances alike
    if 0 < percentage < 100 and parent < 2:
        decisions = {ours.should_sample(context, t, "GET").decision for t in TRACE_IDS[:300]}
        assert len(decisions) == 2  # some kept, some dropped: the test compares both outcomes


def test_the_wrapper_shares_the_distros_rate_state_and_description():
    distro = RateLimitedSampler(5.0)
    ours = faster(distro)
    assert isinstance(ours, FasterRateLimitedSampler)
    assert ours._percentage is distro._sampling_percentage_generator
    assert ours.get_description() == distro.get_description()


def test_other_samplers_are_left_as_they_are():
    other = ParentBased(ALWAYS_ON)
    assert faster(other) is other


def test_telemetry_set_up_swaps_in_the_faster_sampler_and_nothing_else():
    provider = TracerProvider(sampler=RateLimitedSampler(5.0))
    telemetry._use_faster_sampler(provider)
    assert isinstance(provider.sampler, FasterRateLimitedSampler)
    kept = TracerProvider(sampler=ALWAYS_ON)
    telemetry._use_faster_sampler(kept)
    assert kept.sampler is ALWAYS_ON


def test_a_distro_that_scores_otherwise_keeps_its_own_sampler(monkeypatch):
    monkeypatch.setattr(sampling, "_get_DJB2_sample_score", lambda digits: 0.5)
    sampler = RateLimitedSampler(5.0)
    assert sampling.faster(sampler) is sampler


def test_a_distro_sampler_without_its_rate_state_is_left_as_it_is():
    sampler = RateLimitedSampler(5.0)
    del sampler._sampling_percentage_generator
    assert sampling.faster(sampler) is sampler


def test_if_a_private_piece_of_the_distro_fails_its_own_sampler_decides_from_then_on(monkeypatch):
    distro, wrapped = samplers(100.0)

    def changed(*args, **kwargs):
        raise TypeError("a new signature")

    monkeypatch.setattr(sampling, "parent_context_sampling", changed)
    parent = parents()[1]
    for _ in range(2):
        result = wrapped.should_sample(parent, 0x0AF7651916CD43DD8448EB211C80319C, "span")
        assert result.decision == distro.should_sample(parent, 0x0AF7651916CD43DD8448EB211C80319C, "span").decision
    assert wrapped._fell_back
