"""What the scenarios run against over HTTP: a function app's URL, its keys, what to expect of it.

Three ways to get one:

- `from_endpoints`: the host stand-in of `python -m devstack up --functions` (its
  endpoints.json);
- `from_azd`: a deployment, from `azd env get-values` and `az functionapp keys list`;
- `explicit`: any base URL with keys given by the caller (e.g. `func start`).

Keys are held out of every `repr` and message: a target can be printed safely.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.scenarios.cli import ToolError, run_json
from tests.scenarios.evidence import AppInsightsEvidence, DevstackEvidence, Evidence

READ_ROLE = "Orders.Read"  # the app roles infra/ and the devstack give the API
WRITE_ROLE = "Orders.Write"
DEFAULT_ROUTE_PREFIX = "api"


class TargetError(RuntimeError):
    """The target cannot be set up; the message says what is missing (never a key)."""


@dataclass(frozen=True)
class Target:
    """A function app served over HTTP, and what the scenarios may expect of it."""

    name: str
    url: str  # the app's root, e.g. https://<app>.azurewebsites.net
    audiences: tuple[str, ...]  # a token's `aud` is one of these (v1: App ID URI, v2: client ID)
    function_key: str | None = field(default=None, repr=False)
    master_key: str | None = field(default=None, repr=False)
    keys_enforced: bool = True  # False for `func start`, which does not check keys
    route_prefix: str = DEFAULT_ROUTE_PREFIX
    read_role: str = READ_ROLE
    write_role: str = WRITE_ROLE
    evidence: Evidence | None = field(default=None, repr=False)
    writes_refused: bool = False  # the app writes with an identity without the write role (the refusal scenario)

    def secrets(self) -> tuple[str, ...]:
        """The values that must never be printed."""
        return tuple(k for k in (self.function_key, self.master_key) if k)


# ---------------------------------------------------------------- the host stand-in


def read_endpoints(state_dir: Path) -> dict[str, Any]:
    path = state_dir / "endpoints.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TargetError(f"no devstack is running with state dir '{state_dir}' ({path} not found); start one "
                          "with: python -m devstack up --functions") from None


def from_endpoints(endpoints: Mapping[str, Any], *, name: str = "host stand-in") -> Target:
    """The host stand-in described by a devstack's endpoints.json (`up --functions`)."""
    functions = endpoints.get("functions")
    if not functions:
        raise TargetError("this devstack serves no functions: start it with `python -m devstack up --functions`")
    keys = functions["keys"]
    write_roles = endpoints["identities"][functions["write_identity"]]["roles"]
    return Target(name=name, url=functions["url"], route_prefix=functions["route_prefix"],
                  audiences=(endpoints["api_app_id_uri"], endpoints["api_client_id"]),
                  function_key=keys["functionKeys"]["default"], master_key=keys["masterKey"],
                  read_role=endpoints["api_roles"]["read"], write_role=endpoints["api_roles"]["write"],
                  evidence=DevstackEvidence(endpoints["control_url"]),
                  writes_refused=endpoints["api_roles"]["write"] not in write_roles)


def func_start(url: str, endpoints: Mapping[str, Any] | None = None) -> Target:
    """`func start` on this machine, pointed at a devstack by `python -m devstack settings` (if `endpoints`)."""
    audiences = (endpoints["api_app_id_uri"], endpoints["api_client_id"]) if endpoints else ()
    evidence = DevstackEvidence(endpoints["control_url"]) if endpoints else None
    return Target(name="func start", url=url.rstrip("/"), audiences=audiences, keys_enforced=False,
                  evidence=evidence)


# ---------------------------------------------------------------- a deployment


REQUIRED_AZD_VALUES = ("AZURE_FUNCTION_APP_NAME", "AZURE_FUNCTION_APP_URL", "AZURE_RESOURCE_GROUP", "API_APP_ID_URI")


def azd_values(environment: str | None = None) -> dict[str, str]:
    """`azd env get-values` of the current (or named) environment, as a dict."""
    args = ["env", "get-values", "--output", "json"]
    if environment:
        args += ["--environment", environment]
    try:
        values = run_json("azd", args, what="read the azd environment")
    except ToolError as exc:
        raise TargetError(str(exc)) from None
    if not isinstance(values, dict):
        raise TargetError("`azd env get-values --output json` did not print an object")
    missing = [name for name in REQUIRED_AZD_VALUES if not values.get(name)]
    if missing:
        raise TargetError(f"the azd environment has no {', '.join(missing)}: run `azd up` (or `azd provision`) "
                          "first")
    return {str(k): str(v) for k, v in values.items()}


def function_app_keys(app: str, resource_group: str, subscription: str | None = None) -> tuple[str, str]:
    """(default function key, master key) of a deployed app, from `az functionapp keys list`."""
    args = ["functionapp", "keys", "list", "--name", app, "--resource-group", resource_group, "--output", "json"]
    if subscription:
        args += ["--subscription", subscription]
    try:
        keys = run_json("az", args, what=f"list the keys of function app '{app}'")
    except ToolError as exc:
        raise TargetError(str(exc)) from None
    function_key = (keys.get("functionKeys") or {}).get("default")
    master_key = keys.get("masterKey")
    if not function_key or not master_key:
        raise TargetError(f"`az functionapp keys list` shows no default function key or master key for '{app}'")
    return function_key, master_key


def from_azd(environment: str | None = None) -> Target:
    """The deployment of the current azd environment: its URL, keys and Application Insights."""
    values = azd_values(environment)
    subscription = values.get("AZURE_SUBSCRIPTION_ID") or None
    function_key, master_key = function_app_keys(values["AZURE_FUNCTION_APP_NAME"], values["AZURE_RESOURCE_GROUP"],
                                                 subscription)
    insights = values.get("APPLICATIONINSIGHTS_NAME")
    evidence = AppInsightsEvidence(insights, values["AZURE_RESOURCE_GROUP"], subscription=subscription) \
        if insights else None
    # infra/ gives the write identity (the reader's when there is no separate writer) the write role,
    # so a deployment never refuses the app's writes: that scenario needs a target set up for it.
    return Target(name=f"azd environment '{values.get('AZURE_ENV_NAME', environment or 'current')}'",
                  url=values["AZURE_FUNCTION_APP_URL"].rstrip("/"),
                  audiences=tuple(v for v in (values["API_APP_ID_URI"], values.get("API_CLIENT_ID")) if v),
                  function_key=function_key, master_key=master_key, evidence=evidence)


def explicit(url: str, *, function_key: str | None, master_key: str | None, audiences: tuple[str, ...] = (),
             app_insights: str | None = None, resource_group: str | None = None) -> Target:
    """A function app given by URL and keys (say, a deployment made without azd)."""
    evidence = AppInsightsEvidence(app_insights, resource_group) if app_insights and resource_group else None
    return Target(name=url, url=url.rstrip("/"), audiences=audiences, function_key=function_key,
                  master_key=master_key, keys_enforced=True, evidence=evidence)
