"""Who configures telemetry: the worker, the host app, or the app itself, and never twice.

Each case runs in a fresh interpreter: OpenTelemetry's providers can be set once per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from devstack.appsettings import OFFLINE_EXPORTER_SETTINGS
from shared import telemetry

ROOT = Path(__file__).resolve().parents[2]
# Nothing listens there: the exporter's background posts fail, which must not matter.
CONNECTION_STRING = "InstrumentationKey=00000000-0000-4000-8000-000000000001;IngestionEndpoint=http://127.0.0.1:9/"


def run(*parts: str, **env: str) -> dict:
    """Run the code `parts` (the last prints one JSON line) in a fresh interpreter with only `env` set."""
    code = "\n".join(textwrap.dedent(part) for part in parts)
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **OFFLINE_EXPORTER_SETTINGS,
                   "APPLICATIONINSIGHTS_CONNECTION_STRING": CONNECTION_STRING, "OTEL_TRACES_SAMPLER": "always_on",
                   **env}
    result = subprocess.run([sys.executable, "-W", "always", "-c", code], capture_output=True,
                            text=True, env=environment, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    report["stderr"] = result.stderr
    return report


CALL = """
    import asyncio, json, logging
    from opentelemetry import trace
    from shared import telemetry
    mode = telemetry.configure()
    with telemetry.tracer.start_as_current_span("probe") as span:
        recording = span.is_recording()
    print(json.dumps({"mode": mode, "recording": recording, "problem": telemetry.problem(),
                      "provider": type(trace.get_tracer_provider()).__name__}))
"""


def test_nothing_configured_the_app_configures_azure_monitor():
    report = run(CALL)
    assert (report["mode"], report["recording"], report["provider"]) == ("app", True, "TracerProvider")


def test_an_app_that_configured_azure_monitor_itself_keeps_its_own():
    report = run("""
        from azure.monitor.opentelemetry import configure_azure_monitor
        from opentelemetry import trace
        configure_azure_monitor(enable_live_metrics=False)  # offline: no Live Metrics pings to Azure
        theirs = trace.get_tracer_provider()
    """, CALL, """
        assert trace.get_tracer_provider() is theirs
    """)
    assert (report["mode"], report["recording"]) == ("existing", True)
    assert "Overriding of current TracerProvider" not in report["stderr"]
    assert "already instrumented" not in report["stderr"].lower()


@pytest.mark.parametrize("value", ["1", "yes", "True ", "T", " y"])
def test_the_workers_switch_is_read_as_the_worker_reads_it(value):
    assert telemetry.worker_exports({"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": value})
    report = run(CALL, PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY=value)
    assert report["mode"] == "worker"
    assert report["provider"] == "ProxyTracerProvider"  # we configured nothing: the worker does


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off", "enabled"])
def test_anything_else_is_not_the_workers_switch(value):
    assert not telemetry.worker_exports({"PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY": value})


@pytest.mark.parametrize("connection_string", [
    "not a connection string",
    "InstrumentationKey=not-a-guid",
    "ClientId=00000000-0000-4000-8000-000000000001;Authorization=AAD",  # the authentication string, misplaced
    "IngestionEndpoint=https://westeurope-5.in.applicationinsights.azure.com/",  # no key
])
def test_a_bad_connection_string_is_reported_once_and_calls_go_on(connection_string):
    report = run(CALL, """
        print(json.dumps({"again": telemetry.configure(), "mode": mode, "problem": telemetry.problem()}))
    """, APPLICATIONINSIGHTS_CONNECTION_STRING=connection_string)
    assert (report["mode"], report["again"]) == ("failed", "failed")
    assert "configure_azure_monitor() failed" in report["problem"]
    assert connection_string not in report["problem"] and connection_string not in report["stderr"]
    assert report["stderr"].count("Telemetry is not exported") == 1


def test_the_app_set_up_uses_the_faster_default_sampler_and_skips_instrumentations_of_absent_libraries():
    report = run("""
        import importlib.util, json
        from opentelemetry import trace
        from shared import telemetry
        telemetry.configure()
        sampler = trace.get_tracer_provider().sampler
        from opentelemetry.instrumentation.requests import RequestsInstrumentor
        print(json.dumps({"sampler": type(sampler).__name__, "wrapped": type(sampler.sampler).__name__,
                          "absent": sorted(telemetry.absent_instrumentations()),
                          "requests_instrumented": RequestsInstrumentor().is_instrumented_by_opentelemetry,
                          "django_installed": importlib.util.find_spec("django") is not None}))
    """, OTEL_TRACES_SAMPLER="microsoft.rate_limited")
    assert (report["sampler"], report["wrapped"]) == ("FasterRateLimitedSampler", "RateLimitedSampler")
    assert not report["django_installed"] and "django" in report["absent"]  # not installed here: off up front
    assert "requests" not in report["absent"] and report["requests_instrumented"]  # installed: the distro's call


WORKER_SET_UP = """
    from azure.monitor.opentelemetry import configure_azure_monitor
    configure_azure_monitor(logger_name="shared", enable_live_metrics=False)  # as the worker does, before the import
"""
TUNING = """
    import json, os
    from opentelemetry import trace
    from shared import sampling, telemetry
    decided = []  # spans of ours that the faster sampler decided
    faster = sampling.FasterRateLimitedSampler.should_sample
    sampling.FasterRateLimitedSampler.should_sample = lambda self, *a, **k: decided.append(1) or faster(self, *a, **k)
    mode = telemetry.configure()
    telemetry.tracer.start_span("probe").end()
    print(json.dumps({"mode": mode, "provider_sampler": type(trace.get_tracer_provider().sampler).__name__,
                      "faster_decided": len(decided),
                      "resource_metric_off": os.environ.get(telemetry.RESOURCE_METRIC_SWITCH)}))
"""


def test_the_workers_default_set_up_gets_the_faster_sampler_and_no_resource_metric():
    report = run(WORKER_SET_UP, TUNING, PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY="true",
                 OTEL_TRACES_SAMPLER="microsoft.rate_limited")
    assert report["mode"] == "worker"
    # Our tracer was made at import, from the worker's provider: it is made again with the faster sampler.
    assert (report["provider_sampler"], report["faster_decided"]) == ("FasterRateLimitedSampler", 1)
    assert report["resource_metric_off"] == "true"


def test_a_host_apps_own_set_up_is_left_as_it_is():
    report = run(WORKER_SET_UP, TUNING, OTEL_TRACES_SAMPLER="microsoft.rate_limited")
    assert report["mode"] == "existing"
    assert (report["provider_sampler"], report["faster_decided"]) == ("RateLimitedSampler", 0)
    assert report["resource_metric_off"] is None


def test_an_explicit_resource_metric_setting_wins():
    report = run(TUNING, OTEL_TRACES_SAMPLER="microsoft.rate_limited",
                 APPLICATIONINSIGHTS_OPENTELEMETRY_RESOURCE_METRIC_DISABLED="false")
    assert (report["mode"], report["resource_metric_off"]) == ("app", "false")


def test_the_resource_metric_stays_on_when_resource_attributes_are_set():
    # It is the one item that carries them: whoever sets OTEL_RESOURCE_ATTRIBUTES wants to see them.
    report = run(TUNING, OTEL_TRACES_SAMPLER="microsoft.rate_limited",
                 OTEL_RESOURCE_ATTRIBUTES="deployment.environment=prod")
    assert (report["mode"], report["resource_metric_off"]) == ("app", None)
