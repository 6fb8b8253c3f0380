"""The README's "Copy it into your own app", done to an existing app, then run against the devstack.

The steps are read from the README itself (the folder name and the registration block), so
the test does exactly what the README says. The copied app runs in a fresh interpreter
whose import path is the copied app only: `shared` there is the app's own package.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement

from devstack.appsettings import app_settings

ROOT = Path(__file__).resolve().parents[2]
EXISTING_APP = Path(__file__).with_name("existing_app")


def copy_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    return readme.split("## Copy it into your own app", 1)[1].split("\n## ", 1)[0]


def registration_block() -> str:
    [block] = re.findall(r"```python\n(.*?)```", copy_section(), re.S)
    return textwrap.dedent(block)


def folder_name() -> str:
    return re.search(r"^from (\w+) import blueprint$", registration_block(), re.M)[1]


def requirement_lines(path: Path) -> list[Requirement]:
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return [Requirement(line) for line in lines if line and not line.startswith("-")]


def copied_app(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    shutil.copytree(EXISTING_APP, app)
    # 1. Our folder, under another name, no edit.
    shutil.copytree(ROOT / "shared", app / folder_name(), ignore=shutil.ignore_patterns("__pycache__"))
    # 2. Our requirements added to theirs.
    with (app / "requirements.txt").open("a", encoding="utf-8") as requirements:
        requirements.write((ROOT / "requirements.txt").read_text(encoding="utf-8"))
    # 3. The registration block, at the end of their function_app.py.
    with (app / "function_app.py").open("a", encoding="utf-8") as function_app:
        function_app.write("\n" + registration_block())
    return app


RUN = """
import json, sys, warnings
import azure.functions as func
from opentelemetry import trace

import function_app
from apim_client import telemetry

found = {}
for f in function_app.app.get_functions():  # azure-functions refuses a duplicated name here
    trigger = json.loads(f.get_function_json())["bindings"][0]
    found[f.get_function_name()] = {"route": trigger.get("route"), "auth": trigger.get("authLevel"),
                                   "user": f.get_user_function()}

import asyncio

async def call(name, url, path=None, method="GET", body=b"", headers=None):
    request = func.HttpRequest(method=method, url=url, body=body, headers=headers or {},
                               route_params={"path": path} if path is not None else {})
    response = found[name]["user"](request, None) if name.startswith("apim_") else found[name]["user"](request)
    if asyncio.iscoroutine(response):
        response = await response
    return response.status_code, response.get_body().decode()

async def main():
    results = {
        "orders": await call("apim_proxy", "http://localhost/api/apim/orders", "orders"),
        "inventory": await call("apim_inventory_proxy", "http://localhost/api/apim-inventory/items/widget",
                                "items/widget"),
        "write": await call("apim_inventory_proxy", "http://localhost/api/apim-inventory/items", "items",
                            method="POST", body=b'{"item": "gadget", "quantity": 1}',
                            headers={"Content-Type": "application/json"}),
        "their_health": await call("health", "http://localhost/api/health"),
        "our_health": await call("apim_health", "http://localhost/api/apim-health"),
    }
    telemetry.flush()
    return results

results = asyncio.run(main())
print(json.dumps({"functions": {n: {k: v for k, v in f.items() if k != "user"} for n, f in found.items()},
                  "results": results, "mode": telemetry.configure(),
                  "provider": type(trace.get_tracer_provider()).__name__}))
"""


def run_copied_app(app: Path, endpoints: dict[str, Any]) -> tuple[dict[str, Any], str]:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **app_settings(endpoints),
           "PYTHONPATH": str(app), "OTEL_TRACES_SAMPLER": "always_on"}
    result = subprocess.run([sys.executable, "-W", "always", "-c", RUN], cwd=app, env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_the_readme_steps_name_a_folder_and_register_both_connections():
    assert folder_name() == "apim_client"
    assert "app.register_functions(blueprint())" in registration_block()
    assert 'app.register_functions(blueprint("inventory"))' in registration_block()


def test_the_existing_apps_pins_satisfy_our_requirements():
    ours = {r.name.lower(): r for r in requirement_lines(ROOT / "requirements.txt")}
    for pinned in requirement_lines(EXISTING_APP / "requirements.txt"):
        [version] = [s.version for s in pinned.specifier]
        if pinned.name.lower() in ours:
            assert ours[pinned.name.lower()].specifier.contains(version), (pinned, ours[pinned.name.lower()])


def test_the_copied_app_runs_both_connections_with_its_own_names_auth_and_telemetry(tmp_path, endpoints, control):
    app = copied_app(tmp_path)
    assert (app / "shared" / "greeting.py").exists()  # theirs, untouched
    report, stderr = run_copied_app(app, endpoints)

    functions = report["functions"]
    assert set(functions) == {"health", "hello", "apim_proxy", "apim_health", "apim_timer",
                              "apim_inventory_proxy", "apim_inventory_health", "apim_inventory_timer"}
    assert functions["health"]["auth"] == "ANONYMOUS"  # their default stays theirs
    for name in ("apim_proxy", "apim_health", "apim_inventory_proxy", "apim_inventory_health"):
        assert functions[name]["auth"] == "FUNCTION", name
    routes = [f["route"] for f in functions.values() if f["route"]]
    assert len(routes) == len(set(routes))  # no route clashes either

    results = report["results"]
    assert results["orders"][0] == 200 and json.loads(results["orders"][1])
    assert results["inventory"][0] == 200 and json.loads(results["inventory"][1])["item"] == "widget"
    assert results["write"][0] == 201
    assert results["their_health"] == [200, "alive"]
    assert results["our_health"][0] == 200

    # Telemetry configured once, by the app's own configure_azure_monitor(); ours joins it.
    assert report["mode"] == "existing" and report["provider"] == "TracerProvider"
    assert json.loads(results["our_health"][1])["telemetry"] == "existing"
    assert "Overriding of current TracerProvider" not in stderr
    assert "already instrumented" not in stderr.lower()
    names = {envelope.get("data", {}).get("baseData", {}).get("name") for envelope in control.telemetry()}
    assert "apim.token.acquire" in names
