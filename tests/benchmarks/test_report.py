"""The benchmark's verdicts are arithmetic on what it measured: check them on known numbers."""

from __future__ import annotations

import copy
from typing import Any

from benchmarks import report


def _variant(p50: float, p99: float) -> dict[str, Any]:
    return {"calls": 100, "p50_ms": p50, "p90_ms": p99, "p99_ms": p99, "mean_ms": p50, "statuses": {"200": 100}}


def _calls(app_p50: float) -> dict[str, Any]:
    return {
        "telemetry_description": "deployed",
        "path": "GET /status",
        "sequential": {"floor": _variant(2.0, 3.0), "app": _variant(app_p50, 3.6),
                       "lean": _variant(2.2, 3.3), "naive": _variant(7.0, 9.0)},
        "throughput": {"ratio": 0.9, "floor": {"median_rps": 800, "statuses": {"200": 10}},
                       "app": {"median_rps": 720, "statuses": {"200": 10}}},
        "naive_non_loopback_hosts": [],
    }


RESULTS: dict[str, Any] = {
    "calls": {"deployed": _calls(app_p50=2.6)},
    "storm": {"statuses": {"200": 900, "201": 100}, "token_requests_by_identity": {"reader": 1, "writer": 1},
              "second_burst": {"new_token_requests": {"reader": 0, "writer": 0}}, "next_token_request_in_s": 3300},
    "memory": {"statuses": {"200": 10}, "rss_growth_mb": 2.5, "rss_before_mb": 70.0, "rss_after_mb": 72.5},
    "cold_start": {"ratio": 1.02, "app_ms": 408, "floor_ms": 400, "samples": 5, "network_events_during_import": 0,
                   "first_response": {"imported_ms": 400, "answered_ms": 550}},
}


def test_each_target_is_judged_on_its_own_ratio():
    summary = report.summarize(RESULTS)

    verdicts = {name: target["met"] for name, target in summary["targets"].items()}
    assert verdicts == {"p50_ratio": False, "p99_ratio": True, "throughput_ratio": True, "naive_speedup": False,
                        "token_requests_per_identity": True, "token_requests_after_storm": True,
                        "import_ratio": True, "rss_growth_mb": True}
    assert summary["ratios"]["p50_ratio"] == 1.3
    assert not summary["all_met"]


def test_bounds_show_what_any_app_could_score_on_the_stand_in():
    found = report.summarize(RESULTS)["bounds"]

    assert found["naive_over_floor"] == 3.5  # even an app as fast as the floor is only 3.5 times faster than naive
    assert found["lean_p50_ratio"] == 1.1


def test_the_worst_identity_decides_the_storm_count():
    results = copy.deepcopy(RESULTS)
    results["storm"]["token_requests_by_identity"] = {"reader": 1, "writer": 3}

    assert report.summarize(results)["targets"]["token_requests_per_identity"] == {
        "description": "token requests per identity, 1000-call storm", "target": "= 1", "value": 3, "met": False}


def test_a_failed_call_makes_the_run_invalid_and_the_table_says_so():
    results = copy.deepcopy(RESULTS)
    results["calls"]["deployed"]["sequential"]["app"]["statuses"] = {"200": 99, "503": 1}

    summary = report.summarize(results)

    assert summary["problems"] == ["deployed sequential app: statuses {'200': 99, '503': 1}"]
    assert not summary["all_met"]
    assert "NOT VALID" in report.table(results, summary)
