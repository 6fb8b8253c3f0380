"""Invoke the functions in-process as the Functions host and Python worker would.

The worker imports `function_app` after the app settings are in the
environment, sets the root logger to INFO with a handler that formats every
record and queues it for the host (so INFO logs of any library cost what they
cost in Azure), and calls each function with an `HttpRequest` and a context
that carries the invocation's W3C trace parent.
"""

from __future__ import annotations

import collections
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from devstack.appsettings import LOCAL_SAMPLING_SETTINGS, app_settings

# How the app's telemetry is set up in a run (sampling is left to the Azure Monitor distro).
# "deployed" is what `func azure functionapp publish` gives: no sampler setting, so the distro's
# default, a rate limit of 5 traces per second (metrics are never sampled): under load most traces
# are dropped. "dropped" is the same sampler with a limit of 0, so that every trace is dropped
# whatever the call rate (instruction counts run far slower than real time). "every" exports every
# trace, as the devstack's local settings do so that developers see each call; "off" has no
# connection string, so nothing is configured: for comparison only, no target.
TELEMETRY = {
    "deployed": "exported, spans sampled as deployed (distro default: 5 traces/s)",
    "dropped": "exported, every trace dropped by the distro's sampler (rate limit 0)",
    "every": "exported, every trace (OTEL_TRACES_SAMPLER=always_on)",
    "off": "not configured (no connection string)",
}
# Spans and metrics exported only when flushed, so that instruction counts can tell the call
# path (what the caller waits for) from the exporter (background threads).
DEFERRED_EXPORT = {"OTEL_BSP_SCHEDULE_DELAY": "3600000", "OTEL_METRIC_EXPORT_INTERVAL": "3600000"}

Function = Callable[..., Awaitable[Any]]


class WorkerLogHandler(logging.Handler):
    """What the worker adds to the root logger: format every record and queue it for the host."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: collections.deque[str] = collections.deque(maxlen=1024)  # the gRPC stream, bounded
        self.records = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.sent.append(self.format(record))
        self.records += 1


def settings_for(endpoints: Mapping[str, Any], telemetry: str = "deployed") -> dict[str, str]:
    """The app settings for the stack, with telemetry set up as `telemetry` names (see TELEMETRY)."""
    if telemetry not in TELEMETRY:
        raise ValueError(f"unknown telemetry mode {telemetry!r}; one of {', '.join(TELEMETRY)}")
    settings = app_settings(endpoints)
    if telemetry != "every":
        for name in LOCAL_SAMPLING_SETTINGS:
            del settings[name]
    if telemetry == "off":
        del settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    if telemetry == "dropped":
        settings.update({"OTEL_TRACES_SAMPLER": "microsoft.rate_limited", "OTEL_TRACES_SAMPLER_ARG": "0"})
    # The app uses none of these libraries; the benchmark's own urllib calls to the control
    # API must not show up as the app's dependencies (the tests and the demo do the same).
    settings["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = "urllib,urllib3,requests"
    # What the host puts in the worker's environment. It also tells the distro's resource detectors
    # that this is Functions, so they skip their probe of the VM metadata endpoint, as in Azure.
    settings["FUNCTIONS_WORKER_RUNTIME"] = "python"
    return settings


def process_environment(endpoints: Mapping[str, Any]) -> dict[str, str]:
    """The environment of a measured process: the parent's, plus trust in the stack's local CA.

    SSL_CERT_FILE is how an app trusts a private CA without code (OpenSSL's default verify
    paths); it must be there when the process starts, before aiohttp builds its TLS context.
    """
    env = dict(os.environ)
    if endpoints["apim_base_url"].startswith("https://"):
        env["SSL_CERT_FILE"] = endpoints["ca_bundle"]
    return env


def configure_environment(endpoints: Mapping[str, Any], telemetry: str) -> dict[str, str]:
    """Put the app settings for the stack into os.environ, as the host does before import."""
    settings = settings_for(endpoints, telemetry)
    os.environ.update(settings)
    return settings


def install_worker_logging() -> WorkerLogHandler:
    handler = WorkerLogHandler()
    root = logging.getLogger()
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    return handler


# The worker's objects come from devstack.invocation, the one place tests, the demo and the host
# stand-in also build them; imported on use, so that importing this module stays cheap.


def load_functions() -> dict[str, Function]:
    """Import the app and index it, as the worker does; the user functions by name."""
    from devstack.invocation import user_functions

    return user_functions()


def http_request(method: str, path: str, *, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    """The HttpRequest the host builds for /api/apim/{*path}."""
    from devstack.invocation import proxy_request

    return proxy_request(method, path, body=body, headers=headers)


def invocation_context(name: str = "apim_proxy") -> Any:
    """The context the worker passes: an invocation ID and the host's trace parent (sampled flag set)."""
    from devstack.invocation import invocation_context as new_context

    return new_context(name)
