"""`python -m devstack demo`: the whole passwordless chain, run for real on this machine.

Starts the stand-ins, points the real function app at them through its app
settings, invokes the functions as the host would (timer, HTTP GET and POST with
the reader and writer identities, a denied call), runs the Logic App workflow
that infra/ deploys once, then shows what the identity endpoint, APIM and
Application Insights saw. Exits 0 when every step did what it should.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import textwrap
import time
import urllib.parse
from collections import Counter
from typing import Any

from devstack.appsettings import app_settings
from devstack.invocation import (
    LOCAL_BASE_URL,
    http_request,
    invocation_context,
    proxy_request,
    timer_request,
    user_functions,
)
from devstack.stack import DevStack

WIDTH = 78
JSON = {"Content-Type": "application/json"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack demo", description=__doc__.splitlines()[0])
    parser.parse_args(argv or [])
    logging.basicConfig(level=logging.WARNING, format="     log: %(message)s")
    logging.getLogger("shared").setLevel(logging.INFO)
    with DevStack() as stack:
        return asyncio.run(Demo(stack).run())


class Demo:
    def __init__(self, stack: DevStack) -> None:
        self.stack = stack
        self.endpoints = stack.endpoints
        self.failures = 0

    async def run(self) -> int:
        self._configure("reader")
        # Imported only now, as the host imports it: after the app settings exist.
        from shared import runtime, telemetry

        self.functions = user_functions()
        self._banner()
        await self._step("1. Timer trigger: GET TIMER_API_PATH as 'reader'", self._timer)
        await self._step("2. HTTP GET /api/apim/orders as 'reader' (role Orders.Read)", self._get_orders)
        await self._step("3. HTTP POST /api/apim/orders as 'writer' (role Orders.Write)", self._post_order)
        await self._step("4. GET /api/apim-health?probe=token: the token's claims, never the token", self._health)
        await runtime.reset_runtime()
        self._configure("reader")
        # The reader identity for writes too (it lacks Orders.Write): the mistake the hint explains.
        os.environ["MANAGED_IDENTITY_WRITE_CLIENT_ID"] = self.endpoints["identities"]["reader"]["client_id"]
        await self._step("5. HTTP POST /api/apim/orders as 'reader' only (no Orders.Write): denied by APIM, "
                         "with a hint", self._denied)
        await runtime.reset_runtime()
        await self._step("6. Logic App: the workflow infra/ deploys, run once through the control API",
                         self._logic_app)
        telemetry.shutdown()  # export everything before the stand-ins stop
        self._summary()
        print("\n" + ("Demo finished: every step behaved as expected." if not self.failures
                      else f"Demo finished with {self.failures} unexpected result(s)."))
        return 0 if not self.failures else 1

    def _configure(self, identity: str) -> None:
        os.environ.update(app_settings(self.endpoints, identity))
        os.environ.setdefault("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS", "urllib,urllib3,requests")

    def _banner(self) -> None:
        e = self.endpoints
        print("devstack demo: managed identity → token → APIM policy → backend → App Insights\n")
        print(f"  identity endpoint  {e['identity_endpoint']}")
        print(f"  APIM base URL      {e['apim_base_url']}")
        print(f"  App ID URI         {e['api_app_id_uri']}")
        print(f"  ingestion          {e['ingestion_endpoint']}\n")

    async def _step(self, title: str, action: Any) -> None:
        print(title)
        started = time.perf_counter()
        try:
            ok, lines = await action()
        except Exception as exc:  # a demo step must report, not crash the walkthrough
            ok, lines = False, [f"raised {type(exc).__name__}: {exc}"]
        elapsed = (time.perf_counter() - started) * 1000
        mark = "ok" if ok else "UNEXPECTED"
        for line in lines:
            print(f"     {line}")
        print(f"   [{mark}] {elapsed:.0f} ms\n")
        self.failures += not ok

    async def _timer(self) -> tuple[bool, list[str]]:
        await self.functions["apim_timer"](timer_request(), invocation_context("apim_timer"))
        return True, ["the invocation succeeded"]

    async def _get_orders(self) -> tuple[bool, list[str]]:
        response = await self.functions["apim_proxy"](proxy_request("GET", "orders"), invocation_context("apim_proxy"))
        return response.status_code == 200, [f"{response.status_code} {_short(response.get_body())}"]

    async def _post_order(self) -> tuple[bool, list[str]]:
        body = json.dumps({"item": "demo widget", "quantity": 3}).encode()
        response = await self.functions["apim_proxy"](
            proxy_request("POST", "orders", body=body, headers=JSON), invocation_context("apim_proxy"))
        return response.status_code == 201, [f"{response.status_code} {_short(response.get_body())}"]

    async def _health(self) -> tuple[bool, list[str]]:
        request = http_request("GET", f"{LOCAL_BASE_URL}/api/apim-health?probe=token")
        response = await self.functions["apim_health"](request, invocation_context("apim_health"))
        report = json.loads(response.get_body())
        claims = report.get("token", {})
        lines = [f"{name}: {claims[name]}" for name in ("aud", "roles", "azp", "appid", "tid", "exp") if name in claims]
        lines += _claims_explained(claims, self.endpoints)
        return response.status_code == 200 and bool(claims), lines

    async def _denied(self) -> tuple[bool, list[str]]:
        body = json.dumps({"item": "demo widget", "quantity": 1}).encode()
        response = await self.functions["apim_proxy"](
            proxy_request("POST", "orders", body=body, headers=JSON), invocation_context("apim_proxy"))
        error = json.loads(response.get_body()).get("error", {})
        lines = [f"{response.status_code} {error.get('code')}: {error.get('message')}", f"hint: {error.get('hint')}"]
        return response.status_code == 403 and bool(error.get("hint")), lines

    async def _logic_app(self) -> tuple[bool, list[str]]:
        import aiohttp

        async with aiohttp.ClientSession() as session, \
                session.post(f"{self.endpoints['control_url']}/logicapp/run") as response:
            record = await response.json()
        action = next(iter(record["actions"].values()))
        lines = [f"run {record['status']} in {record['duration_ms']:.0f} ms: {action['name']} answered "
                 f"{action['status_code']} {action['code']}",
                 "token: the reader identity (mi_res_id) for the API's App ID URI, from the identity endpoint",
                 "inputs (subscription key, token) kept out of the run record: runtimeConfiguration.secureData"]
        return record["status"] == "Succeeded", lines

    def _summary(self) -> None:
        state = self.stack.state
        stats = state.stats.snapshot()
        print("-" * WIDTH)
        print("What the stand-ins saw")
        identity, apim = stats.get("identity", {}), stats.get("apim", {})
        print(f"  identity endpoint  {identity.get('token_requests', 0)} token requests "
              "(one per identity and run: tokens are cached and shared)")
        print(f"  APIM               {apim.get('requests', 0)} requests, by status {apim.get('by_status', {})}")
        print(f"  backend            {stats.get('backend', {}).get('by_method', {})}")
        envelopes = list(state.telemetry)
        ingestion = stats.get("ingestion", {})
        refused = ingestion.get("refused_items", 0)
        print(f"  App Insights       {len(envelopes)} telemetry items, Entra-authenticated as 'host' "
              f"(Monitoring Metrics Publisher); {refused} refused")
        if refused:
            self.failures += 1  # the host identity holds the role: a refusal means the set-up is wrong
        for line in _telemetry_lines(envelopes):
            print(f"     {line}")
        api_path = urllib.parse.urlsplit(self.endpoints["apim_base_url"]).path
        note = (f"A dependency is named by method and URL path: 'GET {api_path}/orders' is the API's path on "
                f"the gateway ({api_path}, the end of APIM_BASE_URL) followed by the operation's (/orders).")
        print("\n".join(textwrap.wrap(note, WIDTH, initial_indent="  ", subsequent_indent="  ")))


def _claims_explained(claims: dict[str, Any], endpoints: dict[str, Any]) -> list[str]:
    """What a newcomer reads wrongly in these claims: `aud` is not always the App ID URI."""
    app_id_uri, api_client_id = endpoints["api_app_id_uri"], endpoints.get("api_client_id")
    notes = []
    if claims.get("aud") == api_client_id:
        notes.append(f"aud is the API app's client ID, not {app_id_uri}: the app asks for "
                     f"{app_id_uri}/.default, and a v2 token names the API by its client ID "
                     "(a v1 token by the App ID URI). The APIM policy accepts both.")
    elif claims.get("aud") == app_id_uri:
        notes.append("aud is the App ID URI: a v1 token (a v2 token names the API by its client ID).")
    caller = "azp" if claims.get("azp") else "appid" if claims.get("appid") else ""
    if caller:
        notes.append(f"{caller} is the calling identity's client ID (MANAGED_IDENTITY_CLIENT_ID); roles are "
                     "its app roles on the API, the ones the APIM policy checks.")
    return [line for note in notes for line in textwrap.wrap(note, WIDTH - 5, initial_indent="note: ",
                                                              subsequent_indent="      ")]


def _telemetry_lines(envelopes: list[dict[str, Any]]) -> list[str]:
    spans: Counter[str] = Counter()
    metrics: set[str] = set()
    for envelope in envelopes:
        data = envelope.get("data", {})
        base = data.get("baseData", {})
        if data.get("baseType") == "MetricData":
            metrics.update(m.get("name", "") for m in base.get("metrics", []))
        elif data.get("baseType") == "RemoteDependencyData":
            spans[f"dependency {base.get('type', '')}: {base.get('name', '')}"] += 1
        elif data.get("baseType"):
            spans[data["baseType"]] += 1
    lines = [f"{count:>3} x {name}" for name, count in sorted(spans.items())]
    if metrics:
        lines.append("metrics: " + ", ".join(sorted(m for m in metrics if m.startswith("apim."))))
    return lines


def _short(body: bytes, limit: int = 100) -> str:
    text = body.decode("utf-8", "replace").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
