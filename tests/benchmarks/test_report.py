"""The benchmark's verdicts are arithmetic on what it measured: check them on known numbers."""

from __future__ import annotations

import copy
from typing import Any

from benchmarks import report


def _variant(p50: float, cpu_us: float) -> dict[str, Any]:
    return {"calls": 100, "p50_ms": p50, "p90_ms": p50, "p99_ms": p50 * 1.5, "cpu_us": cpu_us,
            "statuses": {"200": 100}}


def _regime(app: int, floor: int, export: int | None = None) -> dict[str, Any]:
    totals = {"app": {"main": app * 100, "all": app * 100 + 7}, "floor": {"main": floor * 100, "all": floor * 100}}
    if export is not None:
        totals["export"] = {"main": 0, "all": export * 100}
    return {"calls": 100, "statuses": {"floor": [200], "app": [200]}, "totals": totals}


STEADY = {"calls": 200, "token_requests_per_call": 0.0, "new_connections_per_call": 0.0,
          "tls_handshakes_per_call": 0.0, "statuses": {"200": 200}}
RESULTS: dict[str, Any] = {
    "instructions": {"dropped": _regime(app=900_000, floor=450_000),
                     "every": _regime(app=1_200_000, floor=450_000, export=2_000_000)},
    "calls": {
        "steady_state": {"sequential": STEADY, "concurrency_64": STEADY},
        "loopback": {"floor": _variant(1.0, 300.0), "app": _variant(1.2, 420.0)},
        "network": {"10": {"floor": _variant(10.5, 350.0), "app": _variant(10.7, 500.0),
                           "naive": _variant(33.0, 3000.0)}},
        "throughput": {"ratio": 0.9, "ratio_by_round": [0.85, 0.9, 0.95],
                       "floor": {"median_rps": 800, "statuses": {"200": 10}},
                       "app": {"median_rps": 720, "statuses": {"200": 10}}},
        "naive_non_loopback_hosts": [],
    },
    "storm": {"statuses": {"200": 900, "201": 100}, "token_requests_by_identity": {"reader": 1, "writer": 1},
              "second_burst": {"new_token_requests": {"reader": 0, "writer": 0}}, "next_token_request_in_s": 3300},
    "memory": {"app": {"statuses": {"200": 10}, "rss_after_first_mb": 82.0, "rss_after_more_mb": 83.0,
                       "rss_growth_mb": 1.0},
               "floor": {"statuses": {"200": 10}, "rss_after_first_mb": 80.0}},
    "cold_start": {"ratio": 1.02, "app_answered_ms": 510, "floor_answered_ms": 500, "app_own_ms": 10, "samples": 3,
                   "app_cpu_ms": 400, "floor_cpu_ms": 392,
                   "app_after_dependencies_cpu_ms": 30, "floor_after_dependencies_cpu_ms": 20,
                   "network_events_during_import": 0, "statuses": [200],
                   "layers_ms": {"aiohttp": 100.0}},
}


def test_each_target_is_judged_on_its_own_figure():
    summary = report.summarize(RESULTS)

    values = summary["values"]
    assert values["instructions_dropped"] == 450_000  # the main thread's app - floor, per call
    assert values["instructions_kept"] == 750_000
    assert values["export_instructions"] == 2_000_000
    assert values["added_cpu_us"] == 120.0
    assert values["naive_latency_ratio"] == 33.0 / 10.7
    assert round(values["added_p50_ms"], 6) == 0.2
    assert values["rss_above_floor_mb"] == 2.0
    missed = [name for name, target in summary["targets"].items() if not target["met"]]
    assert missed == ["instructions_kept"]
    assert not summary["all_met"]


def test_without_valgrind_instructions_are_not_measured_and_the_run_says_so():
    results = copy.deepcopy(RESULTS)
    results["instructions"] = {"unavailable": "valgrind is not installed"}

    summary = report.summarize(results)

    assert summary["targets"]["instructions_dropped"]["met"] is None
    assert "not measured" in report.table(results, summary)
    assert "valgrind is not installed" in report.table(results, summary)
    assert not summary["all_met"]


def test_the_worst_identity_decides_the_storm_count():
    results = copy.deepcopy(RESULTS)
    results["storm"]["token_requests_by_identity"] = {"reader": 1, "writer": 3}

    assert report.summarize(results)["targets"]["storm_token_requests"] == {
        "description": "token requests per identity, 1000-call storm", "target": "= 1", "value": 3, "met": False}


def test_one_new_connection_in_steady_state_is_a_miss():
    results = copy.deepcopy(RESULTS)
    results["calls"]["steady_state"]["concurrency_64"] = {**STEADY, "new_connections_per_call": 1 / 200}

    assert report.summarize(results)["targets"]["steady_connections"]["met"] is False


def test_a_failed_call_makes_the_run_invalid_and_the_table_says_so():
    results = copy.deepcopy(RESULTS)
    results["calls"]["loopback"]["app"]["statuses"] = {"200": 99, "503": 1}

    summary = report.summarize(results)

    assert summary["problems"] == ["loopback app: statuses {'200': 99, '503': 1}"]
    assert not summary["all_met"]
    assert "NOT VALID" in report.table(results, summary)


def test_modelled_figures_are_labelled_as_a_model():
    text = report.table(RESULTS, report.summarize(RESULTS))

    assert "model: TLS + 10 ms RTT" in text
    assert "Modelled network (a model" in text


def test_the_speed_is_the_added_cpu_over_the_added_instructions():
    summary = report.summarize(RESULTS)

    assert summary["reference"]["added_ns_per_instruction"] == 120.0 * 1000 / 450_000
    assert "0.27 ns" in report.table(RESULTS, summary)


def test_no_added_instructions_leaves_the_speed_unknown_rather_than_failing():
    results = copy.deepcopy(RESULTS)
    results["instructions"]["dropped"] = _regime(app=450_000, floor=450_000)

    summary = report.summarize(results)

    assert summary["reference"]["added_ns_per_instruction"] is None
    assert "n/a" in report.table(results, summary)
