"""Ratios against the targets of issue 5, and the table printed at the end of a run."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    limit: float
    compare: Callable[[float, float], bool]
    symbol: str

    def check(self, value: float | None) -> bool:
        return value is not None and self.compare(value, self.limit)


TARGETS = (
    Target("p50_ratio", "p50 latency, app / floor", 1.15, operator.le, "≤"),
    Target("p99_ratio", "p99 latency, app / floor", 1.30, operator.le, "≤"),
    Target("throughput_ratio", "throughput at c=64, app / floor", 0.85, operator.ge, "≥"),
    Target("naive_speedup", "p50 latency, naive / app", 5.0, operator.ge, "≥"),
    Target("token_requests_per_identity", "token requests per identity, 1000-call storm", 1, operator.eq, "="),
    Target("token_requests_after_storm", "token requests in a 2nd burst (before refresh)", 0, operator.eq, "="),
    Target("import_ratio", "import function_app / dependency floor", 1.15, operator.le, "≤"),
    Target("rss_growth_mb", "RSS growth over 10,000 invocations (MB)", 5.0, operator.lt, "<"),
)


def call_ratios(calls: dict[str, Any]) -> dict[str, float | None]:
    sequential, throughput = calls["sequential"], calls["throughput"]
    floor, app = sequential["floor"], sequential["app"]
    naive = sequential.get("naive")
    return {
        "p50_ratio": app["p50_ms"] / floor["p50_ms"],
        "p99_ratio": app["p99_ms"] / floor["p99_ms"],
        "throughput_ratio": throughput["ratio"],
        "naive_speedup": naive["p50_ms"] / app["p50_ms"] if naive else None,
    }


def bounds(calls: dict[str, Any]) -> dict[str, float | None]:
    """What the stand-in allows, whatever the app does (no targets).

    `naive_over_floor` is the naive / app ratio an app with no overhead at all would
    score; `lean_p50_ratio` is what the happy path written by hand scores against the
    floor (benchmarks.lean), so the gap to the app is what its libraries cost.
    """
    sequential = calls["sequential"]
    floor, naive, lean = sequential["floor"], sequential.get("naive"), sequential.get("lean")
    return {
        "naive_over_floor": naive["p50_ms"] / floor["p50_ms"] if naive else None,
        "lean_p50_ratio": lean["p50_ms"] / floor["p50_ms"] if lean else None,
        "lean_p99_ratio": lean["p99_ms"] / floor["p99_ms"] if lean else None,
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    """The ratios issue 5 asks for, each with its target and whether it is met."""
    storm = results["storm"]
    values: dict[str, float | None] = {
        **call_ratios(results["calls"]["deployed"]),
        # The worst identity decides: every one must have made exactly one request.
        "token_requests_per_identity": _worst_count(storm["token_requests_by_identity"]),
        "token_requests_after_storm": sum(storm["second_burst"]["new_token_requests"].values()),
        "import_ratio": results["cold_start"]["ratio"],
        "rss_growth_mb": results["memory"]["rss_growth_mb"],
    }
    problems = invalid(results)
    return {
        "ratios": values,
        "targets": {t.name: {"description": t.description, "target": f"{t.symbol} {t.limit:g}",
                             "value": values[t.name], "met": t.check(values[t.name])} for t in TARGETS},
        # The same calls with the app's telemetry set up otherwise: for comparison, no targets.
        "ratios_by_telemetry": {mode: call_ratios(calls) for mode, calls in results["calls"].items()},
        "bounds": bounds(results["calls"]["deployed"]),
        "problems": problems,
        "all_met": not problems and all(t.check(values[t.name]) for t in TARGETS),
    }


def invalid(results: dict[str, Any]) -> list[str]:
    """Anything that makes the numbers meaningless: failed calls, or network that should not be there."""
    problems = []
    for mode, calls in results["calls"].items():
        for part in ("sequential", "throughput"):
            for name, measured in calls[part].items():
                if isinstance(measured, dict) and set(measured.get("statuses", {"200": 1})) != {"200"}:
                    problems.append(f"{mode} {part} {name}: statuses {measured['statuses']}")
        if calls["naive_non_loopback_hosts"]:
            problems.append(f"the naive baseline contacted {calls['naive_non_loopback_hosts']}")
    for name in ("storm", "memory"):
        if not set(results[name]["statuses"]) <= {"200", "201"}:
            problems.append(f"{name}: statuses {results[name]['statuses']}")
    if results["cold_start"]["network_events_during_import"]:
        problems.append("importing function_app made network calls")
    return problems


def _worst_count(counts: dict[str, int]) -> int:
    return max(counts.values(), key=lambda count: abs(count - 1))


def table(results: dict[str, Any], summary: dict[str, Any]) -> str:
    deployed = results["calls"]["deployed"]
    seq, tput = deployed["sequential"], deployed["throughput"]
    storm, cold, memory = results["storm"], results["cold_start"], results["memory"]
    details = {
        "p50_ratio": f"{seq['app']['p50_ms']:.2f} / {seq['floor']['p50_ms']:.2f} ms",
        "p99_ratio": f"{seq['app']['p99_ms']:.2f} / {seq['floor']['p99_ms']:.2f} ms",
        "throughput_ratio": f"{tput['app']['median_rps']:.0f} / {tput['floor']['median_rps']:.0f} calls/s",
        "naive_speedup": f"{seq['naive']['p50_ms']:.2f} / {seq['app']['p50_ms']:.2f} ms" if "naive" in seq else "",
        "token_requests_per_identity": ", ".join(f"{k} {v}" for k, v in storm["token_requests_by_identity"].items()),
        "token_requests_after_storm": f"next one due in {storm['next_token_request_in_s']} s",
        "import_ratio": f"{cold['app_ms']:.0f} / {cold['floor_ms']:.0f} ms (best of {cold['samples']}), "
                        f"{cold['network_events_during_import']} network calls",
        "rss_growth_mb": f"{memory['rss_before_mb']:.1f} → {memory['rss_after_mb']:.1f} MB",
    }
    rows = [("measure", "value", "target", "", "detail")]
    for name, target in summary["targets"].items():
        value = target["value"]
        shown = "n/a" if value is None else (f"{value:.2f}" if isinstance(value, float) else str(value))
        rows.append((target["description"], shown, target["target"], "ok" if target["met"] else "MISSED",
                     details[name]))
    lines = _columns(rows)
    if summary["problems"]:
        lines += ["", "NOT VALID: " + "; ".join(summary["problems"])]
    lines += ["", "By how the app's telemetry is set up (targets apply to the first row):", ""]
    by_mode = [("app telemetry", "p50", "p99", "throughput", "app p50")]
    for mode, ratios in summary["ratios_by_telemetry"].items():
        calls = results["calls"][mode]
        by_mode.append((calls["telemetry_description"], f"{ratios['p50_ratio']:.2f}", f"{ratios['p99_ratio']:.2f}",
                        f"{ratios['throughput_ratio']:.2f}", f"{calls['sequential']['app']['p50_ms']:.2f} ms"))
    lines += _columns(by_mode)
    lines += ["", "What this stand-in allows, whatever the app does (no targets):", ""]
    lines += _columns(_bound_rows(seq, summary["bounds"]))
    first = cold["first_response"]
    lines += ["", f"Floor: raw aiohttp, one kept-alive session, token in hand; path {deployed['path']}.",
              f"Cold process: app imported at {first['imported_ms']:.0f} ms, first invocation answered at "
              f"{first['answered_ms']:.0f} ms (telemetry set up, token fetched, connection opened)."]
    return "\n".join(lines)


def _bound_rows(seq: dict[str, Any], found: dict[str, float | None]) -> list[tuple[str, ...]]:
    rows = [("measure", "value", "detail")]
    if found["naive_over_floor"] is not None:
        rows.append(("p50 latency, naive / floor (best naive / app possible)", f"{found['naive_over_floor']:.2f}",
                     f"{seq['naive']['p50_ms']:.2f} / {seq['floor']['p50_ms']:.2f} ms"))
    if found["lean_p50_ratio"] is not None:
        rows.append(("p50 latency, lean / floor (happy path by hand)", f"{found['lean_p50_ratio']:.2f}",
                     f"{seq['lean']['p50_ms']:.2f} / {seq['floor']['p50_ms']:.2f} ms"))
        rows.append(("p99 latency, lean / floor", f"{found['lean_p99_ratio']:.2f}",
                     f"{seq['lean']['p99_ms']:.2f} / {seq['floor']['p99_ms']:.2f} ms"))
    return rows


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
