"""Fake `azd` and `az` for the live driver's tests: the host stand-in dressed as a deployment.

They answer the few commands the live driver runs, in the shape the real tools print,
from a running `python -m devstack up --functions` (its endpoints.json, named by
FAKE_AZURE_ENDPOINTS): the azd environment's outputs, `az functionapp keys list`, and
`az monitor app-insights query` (from the ingestion stand-in's envelopes and the
backend's request log, for the two queries the scenarios make). Every call is
appended to FAKE_AZURE_LOG. Anything else fails as the real tool would, on stderr.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.request
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

APP_NAME, RESOURCE_GROUP, INSIGHTS, ENVIRONMENT = "func-orders-fake", "rg-orders-fake", "appi-orders-fake", "fake"
SUBSCRIPTION = "00000000-0000-4000-8000-0000000f4ce0"


def _endpoints() -> dict[str, Any]:
    return json.loads(Path(os.environ["FAKE_AZURE_ENDPOINTS"]).read_text(encoding="utf-8"))


def _option(args: Sequence[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args and args.index(name) + 1 < len(args) else None


def _fail(message: str, status: int = 1) -> int:
    print(f"ERROR: {message}", file=sys.stderr)
    return status


def azd(args: Sequence[str]) -> int:
    if list(args[:2]) != ["env", "get-values"] or _option(args, "--output") != "json":
        return _fail(f"fake azd does not know `azd {' '.join(args)}`")
    if os.environ.get("FAKE_AZD_EMPTY"):
        print(json.dumps({"AZURE_ENV_NAME": ENVIRONMENT}))
        return 0
    endpoints = _endpoints()
    functions = endpoints["functions"]
    identities = endpoints["identities"]
    print(json.dumps({
        "AZURE_ENV_NAME": _option(args, "--environment") or ENVIRONMENT,
        "AZURE_SUBSCRIPTION_ID": SUBSCRIPTION,
        "AZURE_RESOURCE_GROUP": RESOURCE_GROUP,
        "AZURE_FUNCTION_APP_NAME": APP_NAME,
        "AZURE_FUNCTION_APP_URL": functions["url"],
        "API_APP_ID_URI": endpoints["api_app_id_uri"],
        "API_CLIENT_ID": endpoints["api_client_id"],
        "APPLICATIONINSIGHTS_NAME": INSIGHTS,
        "MANAGED_IDENTITY_CLIENT_ID": identities[functions["identity"]]["client_id"],
        "MANAGED_IDENTITY_WRITE_CLIENT_ID": identities[functions["write_identity"]]["client_id"],
    }))
    return 0


def az(args: Sequence[str]) -> int:
    if list(args[:3]) == ["functionapp", "keys", "list"]:
        return _keys(args)
    if list(args[:3]) == ["monitor", "app-insights", "query"]:
        return _query(args)
    return _fail(f"fake az does not know `az {' '.join(args[:3])}`", 2)


def _keys(args: Sequence[str]) -> int:
    keys = _endpoints()["functions"]["keys"]
    if os.environ.get("FAKE_AZ_KEYS_FAIL"):
        print(json.dumps(keys))  # stdout that must never be echoed
        return _fail("(AuthorizationFailed) The client does not have authorization to perform action "
                     "'Microsoft.Web/sites/host/listkeys/action'.", 1)
    if (_option(args, "--name"), _option(args, "--resource-group")) != (APP_NAME, RESOURCE_GROUP):
        return _fail("(ResourceNotFound) The Resource 'Microsoft.Web/sites/...' was not found.", 3)
    print(json.dumps({"functionKeys": keys["functionKeys"], "masterKey": keys["masterKey"],
                      "systemKeys": keys["systemKeys"]}))
    return 0


def _control(path: str) -> Any:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(_endpoints()["control_url"] + path, timeout=10) as response:
        return json.loads(response.read())


def _table(columns: list[tuple[str, str]], rows: list[list[Any]]) -> int:
    print(json.dumps({"tables": [{"name": "PrimaryResult", "columns": [{"name": n, "type": t} for n, t in columns],
                                  "rows": rows}]}))
    return 0


_KINDS = {"RequestData": "request", "RemoteDependencyData": "dependency", "MessageData": "trace",
          "ExceptionData": "exception"}


def _query(args: Sequence[str]) -> int:
    if (_option(args, "--app"), _option(args, "--resource-group")) != (INSIGHTS, RESOURCE_GROUP):
        return _fail("(ResourceNotFound) The Application Insights component was not found.", 3)
    kql = _option(args, "--analytics-query") or ""
    operation = re.search(r'operation_Id == "([0-9a-f]{32})"', kql)
    if operation:
        rows = []
        for envelope in _control("/telemetry"):
            if envelope.get("tags", {}).get("ai.operation.id") != operation.group(1):
                continue
            data = envelope.get("data", {})
            base = data.get("baseData", {})
            rows.append([_KINDS.get(data.get("baseType", ""), ""), base.get("name"), base.get("type"),
                         base.get("target"), base.get("success")])
        return _table([("itemType", "string"), ("name", "string"), ("type", "string"), ("target", "string"),
                       ("success", "bool")], rows)
    since = re.search(r"timestamp >= datetime\(([^)]+)\)", kql)
    if kql.startswith("requests") and since:
        # The stand-in host sends no request telemetry: a run shows as the timer's GET at the backend.
        start = datetime.fromisoformat(since.group(1).replace("Z", "+00:00"))
        rows = [[r["time"], 200 <= r["status"] < 300, str(r["status"])] for r in _control("/backend/requests")
                if r["method"] == "GET" and r.get("status") is not None
                and datetime.fromisoformat(r["time"].replace("Z", "+00:00")) >= start]
        return _table([("timestamp", "datetime"), ("success", "bool"), ("resultCode", "string")], rows[:1])
    return _fail(f"fake az cannot answer this query: {kql}", 1)


def main(tool: str, args: Sequence[str]) -> int:
    with open(os.environ["FAKE_AZURE_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps([tool, *args]) + "\n")
    return azd(args) if tool == "azd" else az(args)


def install(bin_dir: Path) -> None:
    """Write `azd` and `az` into `bin_dir`, run by this interpreter."""
    repo = Path(__file__).resolve().parents[2]
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ("azd", "az"):
        script = bin_dir / tool
        script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(repo)!r})\n"
                          "from tests.scenarios.fake_azure import main\n"
                          f"raise SystemExit(main({tool!r}, sys.argv[1:]))\n", encoding="utf-8")
        script.chmod(0o755)
