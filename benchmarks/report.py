"""The figures the benchmark is judged by, each against its target, and the table printed at the end of a run."""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MODEL_RTT_MS = "10"  # the modelled round trip the latency and naive targets are set at


@dataclass(frozen=True)
class Target:
    name: str
    description: str
    limit: float
    compare: Callable[[float, float], bool]
    symbol: str

    def check(self, value: float | None) -> bool | None:
        """Met or not; None when it could not be measured here (callgrind without valgrind)."""
        return None if value is None else self.compare(value, self.limit)


TARGETS = (
    Target("instructions_dropped", "added instructions per call, most traces dropped", 500_000, operator.le, "≤"),
    Target("instructions_kept", "added instructions per call, every trace kept (call path)", 700_000,
           operator.le, "≤"),
    Target("export_instructions", "exporter instructions per exported call, every trace kept", 2_100_000,
           operator.le, "≤"),
    Target("added_cpu_us", "added client CPU per call (µs)", 150, operator.le, "≤"),
    Target("steady_token_requests", "token requests per call, steady state", 0, operator.eq, "="),
    Target("steady_connections", "new connections per call, steady state", 0, operator.eq, "="),
    Target("steady_handshakes", "TLS handshakes per call, steady state", 0, operator.eq, "="),
    Target("storm_token_requests", "token requests per identity, 1000-call storm", 1, operator.eq, "="),
    Target("after_storm_token_requests", "token requests in a 2nd burst (before refresh)", 0, operator.eq, "="),
    Target("naive_cpu_ratio", "client CPU per call, naive / app (model: TLS + 10 ms RTT)", 5.0, operator.ge, "≥"),
    Target("naive_latency_ratio", "p50 latency, naive / app (model: TLS + 10 ms RTT)", 3.0, operator.ge, "≥"),
    Target("added_p50_ms", "added p50 latency, app - floor (ms; model: TLS + 10 ms RTT)", 0.35, operator.le, "≤"),
    Target("cold_ratio", "cold first answer, app / floor", 1.10, operator.le, "≤"),
    Target("cold_own_ms", "cold first answer: the app's own code and set-up (ms)", 30, operator.le, "≤"),
    Target("rss_above_floor_mb", "RSS above the dependency floor after 1,000 calls (MB)", 3.0, operator.le, "≤"),
    Target("rss_growth_mb", "RSS growth over 10,000 more calls (MB)", 5.0, operator.lt, "<"),
    Target("import_network_events", "network calls while importing the app", 0, operator.eq, "="),
)


def instructions(found: dict[str, Any]) -> dict[str, float | None]:
    """Per call, from the callgrind dumps of each sampling regime (None without valgrind).

    The call path is the event loop's thread (what an invocation waits for); the export
    is every thread's work during the flush (the exporter runs in its own threads).
    """
    if found.get("unavailable"):
        return {"instructions_dropped": None, "instructions_kept": None, "export_instructions": None}
    dropped, kept = found["dropped"], found["every"]
    return {
        "instructions_dropped": _added(dropped),
        "instructions_kept": _added(kept),
        "export_instructions": kept["totals"]["export"]["all"] / kept["calls"],
    }


def _ns_per_instruction(added_cpu_us: float, found: dict[str, Any]) -> float | None:
    """Added CPU over added instructions (most traces dropped, as the CPU is measured); None if not counted."""
    if found.get("unavailable"):
        return None
    added = _added(found["dropped"])
    return added_cpu_us * 1000 / added if added > 0 else None


def per_call(regime: dict[str, Any], variant: str) -> float:
    return regime["totals"][variant]["main"] / regime["calls"]


def _added(regime: dict[str, Any]) -> float:
    return per_call(regime, "app") - per_call(regime, "floor")


def values(results: dict[str, Any]) -> dict[str, float | None]:
    calls, storm, cold, memory = results["calls"], results["storm"], results["cold_start"], results["memory"]
    loopback, model = calls["loopback"], calls["network"][MODEL_RTT_MS]
    steady = calls["steady_state"].values()
    return {
        **instructions(results["instructions"]),
        "added_cpu_us": loopback["app"]["cpu_us"] - loopback["floor"]["cpu_us"],
        "steady_token_requests": max(s["token_requests_per_call"] for s in steady),
        "steady_connections": max(s["new_connections_per_call"] for s in steady),
        "steady_handshakes": max(s["tls_handshakes_per_call"] for s in steady),
        # The worst identity decides: every one must have made exactly one request.
        "storm_token_requests": _worst_count(storm["token_requests_by_identity"]),
        "after_storm_token_requests": sum(storm["second_burst"]["new_token_requests"].values()),
        "naive_cpu_ratio": model["naive"]["cpu_us"] / model["app"]["cpu_us"],
        "naive_latency_ratio": model["naive"]["p50_ms"] / model["app"]["p50_ms"],
        "added_p50_ms": model["app"]["p50_ms"] - model["floor"]["p50_ms"],
        "cold_ratio": cold["ratio"],
        "cold_own_ms": cold["app_own_ms"],
        "rss_above_floor_mb": memory["app"]["rss_after_first_mb"] - memory["floor"]["rss_after_first_mb"],
        "rss_growth_mb": memory["app"]["rss_growth_mb"],
        "import_network_events": cold["network_events_during_import"],
    }


def reference(results: dict[str, Any]) -> dict[str, Any]:
    """Printed for reference, without targets: loopback ratios, throughput, every modelled round trip."""
    calls = results["calls"]
    loopback = calls["loopback"]
    found = results["instructions"]
    return {
        # How fast the app's added instructions ran here: its CPU figure is only comparable at the same speed.
        "added_ns_per_instruction": _ns_per_instruction(
            loopback["app"]["cpu_us"] - loopback["floor"]["cpu_us"], found),
        "loopback_p50_ratio": loopback["app"]["p50_ms"] / loopback["floor"]["p50_ms"],
        "loopback_p99_ratio": loopback["app"]["p99_ms"] / loopback["floor"]["p99_ms"],
        "throughput_ratio_c64": calls["throughput"]["ratio"],
        "network_model": {rtt: {"added_p50_ms": m["app"]["p50_ms"] - m["floor"]["p50_ms"],
                                "naive_latency_ratio": m["naive"]["p50_ms"] / m["app"]["p50_ms"],
                                "naive_cpu_ratio": m["naive"]["cpu_us"] / m["app"]["cpu_us"]}
                          for rtt, m in calls["network"].items()},
    }


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    found = values(results)
    verdicts = {t.name: t.check(found[t.name]) for t in TARGETS}
    problems = invalid(results)
    return {
        "values": found,
        "targets": {t.name: {"description": t.description, "target": f"{t.symbol} {t.limit:g}",
                             "value": found[t.name], "met": verdicts[t.name]} for t in TARGETS},
        "reference": reference(results),
        "problems": problems,
        "all_met": not problems and all(verdicts.values()),
    }


def invalid(results: dict[str, Any]) -> list[str]:
    """Anything that makes the numbers meaningless: failed calls, or network that should not be there."""
    problems = []
    calls = results["calls"]
    phases = {"loopback": calls["loopback"], **{f"network {rtt} ms": m for rtt, m in calls["network"].items()},
              **{f"steady state {name}": {"app": s} for name, s in calls["steady_state"].items()},
              "throughput": {k: v for k, v in calls["throughput"].items() if isinstance(v, dict)}}
    for phase, variants in phases.items():
        for name, measured in variants.items():
            if isinstance(measured, dict) and set(measured.get("statuses", {"200": 1})) != {"200"}:
                problems.append(f"{phase} {name}: statuses {measured['statuses']}")
    if calls["naive_non_loopback_hosts"]:
        problems.append(f"the naive baseline contacted {calls['naive_non_loopback_hosts']}")
    for name, statuses in (("storm", results["storm"]["statuses"]), ("memory", results["memory"]["app"]["statuses"]),
                           ("memory floor", results["memory"]["floor"]["statuses"])):
        if not set(statuses) <= {"200", "201"}:
            problems.append(f"{name}: statuses {statuses}")
    if results["cold_start"]["statuses"] != [200]:
        problems.append(f"cold start: statuses {results['cold_start']['statuses']}")
    found = results["instructions"]
    for regime in ("dropped", "every") if not found.get("unavailable") else ():
        if any(statuses != [200] for statuses in found[regime]["statuses"].values()):
            problems.append(f"instructions ({regime}): statuses {found[regime]['statuses']}")
    return problems


def _worst_count(counts: dict[str, int]) -> int:
    return max(counts.values(), key=lambda count: abs(count - 1))


def _shown(value: float | None) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value / 1000:,.0f}k"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def _shown_ns(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ns"


def table(results: dict[str, Any], summary: dict[str, Any]) -> str:
    calls, storm, cold, memory = results["calls"], results["storm"], results["cold_start"], results["memory"]
    loopback, model = calls["loopback"], calls["network"][MODEL_RTT_MS]
    found = results["instructions"]
    counted = ("" if found.get("unavailable") else
                {regime: f"app {per_call(found[regime], 'app') / 1000:,.0f}k - floor "
                         f"{per_call(found[regime], 'floor') / 1000:,.0f}k (callgrind)"
                 for regime in ("dropped", "every")})
    details = {
        "instructions_dropped": counted["dropped"] if counted else found["unavailable"],
        "instructions_kept": counted["every"] if counted else found["unavailable"],
        "export_instructions": f"{found['every']['calls']} calls' spans exported" if counted else "",
        "added_cpu_us": f"app {loopback['app']['cpu_us']:.0f} - floor {loopback['floor']['cpu_us']:.0f} µs (loopback)",
        "steady_token_requests": "sequential and at concurrency 64",
        "steady_connections": "counted by the APIM stand-in",
        "steady_handshakes": "counted by the APIM stand-in",
        "storm_token_requests": ", ".join(f"{k} {v}" for k, v in storm["token_requests_by_identity"].items()),
        "after_storm_token_requests": f"next one due in {storm['next_token_request_in_s']} s",
        "naive_cpu_ratio": f"{model['naive']['cpu_us']:.0f} / {model['app']['cpu_us']:.0f} µs",
        "naive_latency_ratio": f"{model['naive']['p50_ms']:.2f} / {model['app']['p50_ms']:.2f} ms",
        "added_p50_ms": f"{model['app']['p50_ms']:.2f} - {model['floor']['p50_ms']:.2f} ms",
        "cold_ratio": f"{cold['app_answered_ms']:.0f} / {cold['floor_answered_ms']:.0f} ms (best of {cold['samples']})",
        "cold_own_ms": f"CPU after the shared imports: app {cold['app_after_dependencies_cpu_ms']:.0f} - floor "
                       f"{cold['floor_after_dependencies_cpu_ms']:.0f} ms",
        "rss_above_floor_mb": f"{memory['app']['rss_after_first_mb']:.1f} - {memory['floor']['rss_after_first_mb']:.1f}"
                              " MB",
        "rss_growth_mb": f"{memory['app']['rss_after_first_mb']:.1f} → {memory['app']['rss_after_more_mb']:.1f} MB",
        "import_network_events": "Python audit hooks",
    }
    rows = [("measure", "value", "target", "", "detail")]
    for name, target in summary["targets"].items():
        verdict = {True: "ok", False: "MISSED", None: "not measured"}[target["met"]]
        rows.append((target["description"], _shown(target["value"]), target["target"], verdict, details[name]))
    lines = _columns(rows)
    if summary["problems"]:
        lines += ["", "NOT VALID: " + "; ".join(summary["problems"])]
    ref = summary["reference"]
    lines += ["", "Modelled network (a model: the APIM stand-in waits one RTT per request and two more per new "
                  "connection; TLS is real):", ""]
    rows = [("RTT", "floor p50", "app p50", "added p50", "naive p50", "naive / app latency", "naive / app CPU")]
    for rtt, m in calls["network"].items():
        r = ref["network_model"][rtt]
        rows.append((f"{rtt} ms", f"{m['floor']['p50_ms']:.2f} ms", f"{m['app']['p50_ms']:.2f} ms",
                     f"{r['added_p50_ms']:.2f} ms", f"{m['naive']['p50_ms']:.2f} ms",
                     f"{r['naive_latency_ratio']:.2f}", f"{r['naive_cpu_ratio']:.2f}"))
    lines += _columns(rows)
    lines += ["", "For reference, no targets (loopback: the stand-in's own time dominates):", ""]
    lines += _columns([
        ("measure", "value", "detail"),
        ("p50 latency, app / floor, loopback", f"{ref['loopback_p50_ratio']:.2f}",
         f"{loopback['app']['p50_ms']:.2f} / {loopback['floor']['p50_ms']:.2f} ms"),
        ("p99 latency, app / floor, loopback", f"{ref['loopback_p99_ratio']:.2f}",
         f"{loopback['app']['p99_ms']:.2f} / {loopback['floor']['p99_ms']:.2f} ms"),
        ("throughput at c=64, app / floor", f"{ref['throughput_ratio_c64']:.2f}",
         "the median of the rounds': " + ", ".join(f"{r:.2f}" for r in calls["throughput"]["ratio_by_round"])),
        ("the machine's speed: added CPU per added instruction", _shown_ns(ref["added_ns_per_instruction"]),
         "loopback CPU over the callgrind count (most traces dropped)"),
    ])
    lines += ["", "Cold start, import cost per layer (best of runs; the first includes interpreter start):", ""]
    lines += _columns([("layer", "ms"), *((name, f"{ms:.0f}") for name, ms in cold["layers_ms"].items())])
    return "\n".join(lines)


def _columns(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
