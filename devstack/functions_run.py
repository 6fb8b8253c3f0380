"""Serve the function app through the host stand-in, pointed at a running stack.

What `func start` does with a `local.settings.json` written by `python -m devstack
settings`: put the app settings into the environment, then import and index the app,
then serve its functions. Used by `python -m devstack up --functions`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry._logs import get_logger_provider

from devstack.appsettings import DEFAULT_IDENTITY, DEFAULT_WRITE_IDENTITY, UnknownIdentity, app_settings
from devstack.function_keys import FunctionKeys
from devstack.functions_host import FunctionsHost, FunctionsHostServer, route_prefix
from devstack.invocation import APP_MODULE, app_functions

APP_DIR = Path(__file__).resolve().parent.parent  # function_app.py and host.json live at the repository root


@dataclass
class RunningFunctions:
    server: FunctionsHostServer
    description: dict[str, Any]

    def stop(self) -> None:
        runtime = sys.modules.get("shared.runtime")
        if runtime is not None:  # the app's session and credentials belong to the host's loop: close them there
            self.server.call(runtime.reset_runtime())
        self.server.stop()
        # Export what is buffered while the ingestion stand-in still listens (the stack stops next).
        telemetry = sys.modules.get("shared.telemetry")
        if telemetry is not None:
            telemetry.shutdown()
        else:
            _flush_telemetry()


def serve_functions(endpoints: Mapping[str, Any], *, identity: str = DEFAULT_IDENTITY,
                    write_identity: str | None = None, port: int = 0, app_dir: Path = APP_DIR,
                    module: str = APP_MODULE) -> RunningFunctions:
    """Start the host stand-in for the app in `app_dir`; its description goes into endpoints.json."""
    settings = app_settings(endpoints, identity)
    if write_identity:
        identities = endpoints["identities"]
        if write_identity not in identities:
            known = ", ".join(sorted(identities))
            raise UnknownIdentity(f"unknown identity '{write_identity}'; the stack has: {known}")
        settings["MANAGED_IDENTITY_WRITE_CLIENT_ID"] = identities[write_identity]["client_id"]
    os.environ.update(settings)
    if str(app_dir) not in sys.path:
        sys.path.insert(0, str(app_dir))
    functions = app_functions(module)
    keys = FunctionKeys.generate(functions)
    prefix = route_prefix(app_dir / "host.json")
    server = FunctionsHostServer(FunctionsHost(functions, keys, prefix), port)
    url = server.start()
    description = {
        "url": url,
        "base_url": f"{url}/{prefix}" if prefix else url,
        "route_prefix": prefix,
        "identity": identity,
        "write_identity": write_identity or (DEFAULT_WRITE_IDENTITY if identity == DEFAULT_IDENTITY else identity),
        "functions": {name: _summary(f) for name, f in functions.items()},
        "keys": keys.to_json(),
    }
    return RunningFunctions(server=server, description=description)


def _summary(function: Any) -> dict[str, Any]:
    if function.route is None:
        return {"trigger": function.trigger_type}
    return {"trigger": function.trigger_type, "route": function.route.template, "methods": list(function.methods),
            "auth_level": function.auth_level}


def _flush_telemetry() -> None:
    for provider in (trace.get_tracer_provider(), metrics.get_meter_provider(), get_logger_provider()):
        force_flush = getattr(provider, "force_flush", None)
        if force_flush:
            force_flush(10_000)
