"""The function app as the host indexes it, and what it does with bad settings."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import azure.functions as func
import pytest

import function_app
from devstack.invocation import http_request, timer_request
from shared import blueprint, runtime
from shared.errors import ConfigurationError
from tests.plugin import INDEXED as FUNCTIONS


def bindings(name: str) -> list[dict]:
    return json.loads(FUNCTIONS[name].get_function_json())["bindings"]


def test_the_three_functions_are_indexed():
    assert set(FUNCTIONS) == {"apim_proxy", "apim_health", "apim_timer"}


def test_each_route_sets_its_own_auth_level_whatever_the_app_default():
    # Registered in an app whose default is ANONYMOUS, the blueprint's routes still need a function key.
    app = func.FunctionApp(http_auth_level=func.AuthLevel.ANONYMOUS)
    app.register_functions(blueprint())
    app.register_functions(blueprint("inventory"))
    levels = {f.get_function_name(): json.loads(f.get_function_json())["bindings"][0].get("authLevel")
              for f in app.get_functions()}
    assert levels == {"apim_proxy": "FUNCTION", "apim_health": "FUNCTION", "apim_timer": None,
                      "apim_inventory_proxy": "FUNCTION", "apim_inventory_health": "FUNCTION",
                      "apim_inventory_timer": None}


def test_a_named_connection_has_its_own_names_routes_and_schedule():
    app = func.FunctionApp()
    app.register_functions(blueprint("Inventory"))
    found = {f.get_function_name(): json.loads(f.get_function_json())["bindings"][0] for f in app.get_functions()}
    assert found["apim_inventory_proxy"]["route"] == "apim-inventory/{*path}"
    assert found["apim_inventory_health"]["route"] == "apim-inventory-health"
    assert found["apim_inventory_timer"]["schedule"] == "%INVENTORY_TIMER_SCHEDULE%"


def test_a_blueprint_without_timer_and_bad_connection_names():
    app = func.FunctionApp()
    app.register_functions(blueprint("billing", timer=False))
    assert {f.get_function_name() for f in app.get_functions()} == {"apim_billing_proxy", "apim_billing_health"}
    for bad in ("", "in_ventory", "9lives", "in-ventory", "x" * 33):
        with pytest.raises(ValueError, match="connection name"):
            blueprint(bad)


def test_proxy_route_methods_and_auth_level():
    trigger = bindings("apim_proxy")[0]
    assert trigger["type"] == "httpTrigger"
    assert trigger["route"] == "apim/{*path}"
    assert sorted(trigger["methods"]) == ["DELETE", "GET", "PATCH", "POST", "PUT"]
    assert trigger["authLevel"] == "FUNCTION"


def test_health_route():
    trigger = bindings("apim_health")[0]
    assert (trigger["route"], trigger["methods"], trigger["authLevel"]) == ("apim-health", ["GET"], "FUNCTION")


def test_timer_uses_the_schedule_setting_and_a_retry_policy():
    trigger = bindings("apim_timer")[0]
    assert trigger["type"] == "timerTrigger"
    assert trigger["schedule"] == "%TIMER_SCHEDULE%"
    assert trigger.get("runOnStartup") is False
    retry = FUNCTIONS["apim_timer"].get_settings_dict("retry_policy")
    assert retry and retry["strategy"] == "exponential_backoff" and retry["max_retry_count"] == "3"


def test_functions_are_async():
    import inspect

    for function in FUNCTIONS.values():
        assert inspect.iscoroutinefunction(function.get_user_function())


def test_import_touches_no_network_and_reads_no_setting():
    # A fresh interpreter with sockets disabled and no settings at all must still import the app.
    code = textwrap.dedent("""
        import socket
        def refuse(*a, **k):
            raise AssertionError("network touched at import")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import function_app
        print(len(function_app.app.get_functions()))
    """)
    env = {"PATH": "/usr/bin:/bin", "APPLICATIONINSIGHTS_CONNECTION_STRING": "InstrumentationKey=x"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60,
                            cwd=str(Path(function_app.__file__).parent))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "3"


@pytest.fixture
async def no_settings(monkeypatch):
    for name in ("APIM_BASE_URL", "API_APP_ID_URI", "APIM_SUBSCRIPTION_KEY", "MANAGED_IDENTITY_CLIENT_ID"):
        monkeypatch.delenv(name, raising=False)
    await runtime.reset_runtime()
    yield
    await runtime.reset_runtime()


def http(method: str, url: str, route_params: dict | None = None, body: bytes = b"",
         headers: dict | None = None) -> func.HttpRequest:
    return http_request(method, url, route_params=route_params, body=body, headers=headers)


async def test_bad_settings_are_reported_by_health_and_by_calls(no_settings):
    response = await FUNCTIONS["apim_health"].get_user_function()(http("GET", "http://localhost/api/apim-health"), None)
    assert response.status_code == 503
    report = json.loads(response.get_body())
    assert report["status"] == "misconfigured"
    assert any("APIM_BASE_URL is not set" in p for p in report["error"]["problems"])

    proxy = FUNCTIONS["apim_proxy"].get_user_function()
    response = await proxy(http("GET", "http://localhost/api/apim/status", {"path": "status"}), None)
    assert response.status_code == 500
    assert "API_APP_ID_URI is not set" in json.loads(response.get_body())["error"]["message"]


async def test_timer_fails_the_invocation_with_the_setting_named(no_settings):
    timer = FUNCTIONS["apim_timer"].get_user_function()
    with pytest.raises(ConfigurationError, match="APIM_BASE_URL is not set"):
        await timer(timer_request(past_due=False), None)
