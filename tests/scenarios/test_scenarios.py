"""The whole chain, as a caller sees it, written once for every target (see drivers.py).

Each scenario's first docstring line is its name in `python -m tests.scenarios`'s table.
Functions are found by route and trigger, never by name, so renaming or prefixing them
(a Blueprint) changes nothing here. A scenario a target cannot run skips, saying why.
"""

from __future__ import annotations

import json
import secrets

import pytest

from tests.scenarios.drivers import ADMIN, KEYS, NO_KEY, TELEMETRY, WRONG_KEY, Driver, FunctionInfo
from tests.scenarios.evidence import TelemetryItem, poll

ORDER = {"item": "scenario widget", "quantity": 2}
JSON = {"Content-Type": "application/json"}


async def _functions(driver: Driver) -> list[FunctionInfo]:
    functions = await driver.functions()
    assert functions, f"{driver.name} lists no functions"
    return functions


async def proxy_prefix(driver: Driver) -> str:
    """The route up to the catch-all of the function that forwards to APIM, e.g. `apim/`."""
    proxies = [f for f in await _functions(driver) if f.route and "{*" in f.route and "POST" in f.methods]
    assert proxies, f"no HTTP function with a catch-all route accepting POST at {driver.name}"
    chosen = min(proxies, key=lambda f: (f.route != "apim/{*path}", f.route))  # the default API connection first
    return chosen.route.split("{", 1)[0]  # type: ignore[union-attr]


async def health_route(driver: Driver) -> str:
    found = [f.route for f in await _functions(driver)
             if f.route and "{" not in f.route and f.route.rstrip("/").split("/")[-1].endswith("health")]
    assert found, f"no HTTP function with a route ending in 'health' at {driver.name}"
    return sorted(found, key=len)[0]


async def timer_function(driver: Driver) -> str:
    timers = [f.name for f in await _functions(driver) if f.trigger.lower() == "timertrigger"]
    assert timers, f"no timer-triggered function at {driver.name}"
    return sorted(timers)[0]


def need(driver: Driver, what: str) -> None:
    reason = driver.cannot(what)
    if reason:
        pytest.skip(reason)


async def test_reader_get(driver: Driver) -> None:
    """reader's GET /orders"""
    reply = await driver.call("GET", await proxy_prefix(driver) + "orders")
    assert reply.status == 200, reply
    assert isinstance(reply.json(), list), reply


async def test_writer_post(driver: Driver) -> None:
    """writer's POST /orders"""
    reply = await driver.call("POST", await proxy_prefix(driver) + "orders", body=json.dumps(ORDER).encode(),
                              headers=JSON)
    assert reply.status == 201, reply
    created = reply.json()
    assert created["item"] == ORDER["item"] and created.get("id"), reply


async def test_reader_write_refused_with_hint(refusing_driver: Driver) -> None:
    """reader's write refused, with its hint"""
    reply = await refusing_driver.call("POST", await proxy_prefix(refusing_driver) + "orders",
                                       body=json.dumps(ORDER).encode(), headers=JSON)
    assert reply.status == 403, reply
    error = reply.error()
    assert error.get("code") == "access_denied", reply
    assert refusing_driver.write_role in error.get("hint", "") + error.get("message", ""), reply
    assert "MANAGED_IDENTITY_WRITE_CLIENT_ID" in error.get("hint", ""), reply


async def test_health_token_probe(driver: Driver) -> None:
    """health?probe=token: audience and roles"""
    reply = await driver.call("GET", await health_route(driver), query="probe=token")
    assert reply.status == 200, reply
    claims = reply.json()["token"]
    assert "access_token" not in reply.body.decode() and "eyJ" not in reply.body.decode(), "a token in the reply"
    assert driver.read_role in claims.get("roles", []), f"roles {claims.get('roles')}, expected {driver.read_role}"
    if not driver.audiences:
        pytest.skip(f"roles checked; audience {claims['aud']!r} not checked: no expected audience was given")
    assert claims["aud"] in driver.audiences, f"audience {claims['aud']!r}, expected one of {driver.audiences}"


async def test_timer_once_through_admin_endpoint(driver: Driver) -> None:
    """timer run once through the admin endpoint"""
    need(driver, ADMIN)
    need(driver, TELEMETRY)
    assert driver.evidence is not None
    name = await timer_function(driver)
    mark = driver.evidence.checkpoint()
    reply = await driver.run(name)
    assert reply.status == 202, reply
    evidence = driver.evidence
    outcome = await poll(lambda: evidence.run_outcome(name, mark), evidence)
    assert outcome is not None, f"no run of {name} showed in {evidence.description} within {evidence.timeout:.0f} s"
    assert outcome == "succeeded", f"the run of {name} failed (see {evidence.description})"


async def test_bad_path_refused(driver: Driver) -> None:
    """a path leaving the API refused"""
    # %2F stays encoded through the host, so the app sees it and refuses; were it decoded on the way,
    # the dot segments would be removed and no route would match. Either way nothing is forwarded.
    reply = await driver.call("GET", await proxy_prefix(driver) + "orders%2F..%2F..%2Fadmin")
    assert reply.status in (400, 404), reply
    if reply.status == 400:
        assert reply.error().get("code") == "bad_request", reply


async def test_call_without_function_key_refused(driver: Driver) -> None:
    """a call without (or with a wrong) function key refused"""
    need(driver, KEYS)
    path = await proxy_prefix(driver) + "orders"
    for key in (NO_KEY, WRONG_KEY):
        reply = await driver.call("GET", path, key=key)
        assert reply.status == 401, f"{key} key: {reply}"
        assert reply.body == b"", f"{key} key: {reply}"


async def test_telemetry_correlated_with_the_call(driver: Driver) -> None:
    """telemetry correlated with the call"""
    need(driver, TELEMETRY)
    evidence = driver.evidence
    assert evidence is not None
    trace_id = secrets.token_hex(16)
    reply = await driver.call("GET", await proxy_prefix(driver) + "orders", trace_id=trace_id)
    assert reply.status == 200, reply

    def http_dependencies() -> list[TelemetryItem] | None:
        found = [i for i in evidence.operation(trace_id)
                 if i.kind == "dependency" and i.type.upper() == "HTTP" and i.success]
        return found or None

    found = await poll(http_dependencies, evidence)
    assert found, f"no HTTP dependency with operation ID {trace_id} in {evidence.description} within " \
                  f"{evidence.timeout:.0f} s"
