"""`api(name).call()` sets up telemetry itself and joins the invocation's trace.

A fresh interpreter per case: telemetry is configured once per process, and the suite's
own set-up (tests/plugin.py) would hide whether the call configures it.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from devstack.appsettings import app_settings

ROOT = Path(__file__).resolve().parents[2]

CHILD = textwrap.dedent("""
    import asyncio, json
    from opentelemetry import trace
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from devstack.invocation import invocation_context
    from shared import api, runtime, telemetry

    async def main():
        report = {}
        report["first"] = (await api("inventory").call("GET", "/items")).status
        report["mode"] = telemetry._mode
        report["provider"] = type(trace.get_tracer_provider()).__name__
        spans = InMemorySpanExporter()
        trace.get_tracer_provider().add_span_processor(SimpleSpanProcessor(spans))
        # New token sources, so the token span is recorded again under the invocation's trace.
        await runtime.reset_runtime()
        context = invocation_context("stock")
        report["invocation_trace"] = context.trace_context.trace_parent.split("-")[1]
        await api("inventory").call("GET", "/items", context=context)
        report["with_context"] = sorted({format(s.context.trace_id, "032x") for s in spans.get_finished_spans()})
        report["with_context_names"] = sorted({s.name for s in spans.get_finished_spans()})
        spans.clear()
        with telemetry.tracer.start_as_current_span("caller") as caller:
            report["caller_trace"] = format(caller.get_span_context().trace_id, "032x")
            await api("inventory").call("GET", "/items")
        report["current_span"] = sorted({format(s.context.trace_id, "032x") for s in spans.get_finished_spans()})
        await runtime.reset_runtime()
        return report

    report = asyncio.run(main())
    telemetry.shutdown()
    print(json.dumps(report))
""")


def run_child(endpoints: dict[str, Any]) -> dict[str, Any]:
    env = {"PATH": "/usr/bin:/bin", **app_settings(endpoints),
           "OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "urllib,urllib3,requests"}
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=120,
                            cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_api_call_configures_telemetry_and_joins_the_invocations_trace(endpoints):
    report = run_child(endpoints)

    # Nothing else set telemetry up in that process: the call did, as the triggers do.
    assert report["first"] == 200
    assert (report["mode"], report["provider"]) == ("app", "TracerProvider")
    # With the invocation's context, every span of the call (token, APIM dependency) is in its trace.
    assert report["with_context"] == [report["invocation_trace"]]
    assert "apim.token.acquire" in report["with_context_names"] and len(report["with_context_names"]) > 1
    # Without one, the call joins the current span's trace.
    assert report["current_span"] == [report["caller_trace"]]
