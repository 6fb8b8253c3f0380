"""The API as infra/ deploys it: `infra/apim/api.json`, its operations and their policies.

api.json is read by both the Bicep files and the stand-in, so the routes and the
policy each operation gets cannot drift apart. An operation's `"policy": "read"`
picks `operation-read-policy.xml`; the API-scope policy is `api-policy.xml`; an
optional `global-policy.xml` stands for the service's "All APIs" policy.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devstack.apim.errors import PolicyError
from devstack.apim.reader import read_policy
from devstack.apim.registry import ELEMENTS
from devstack.apim.statements import DEFAULT_GLOBAL_POLICY, INHERIT_ALL, EffectivePolicy, PolicyDocument, compose

API_FILE = "api.json"
API_POLICY_FILE = "api-policy.xml"
GLOBAL_POLICY_FILE = "global-policy.xml"
_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "TRACE")
_PARAMETER = re.compile(r"^\{([A-Za-z0-9_-]+)\}$")


def operation_policy_file(policy: str) -> str:
    return f"operation-{policy}-policy.xml"


@dataclass(frozen=True)
class Operation:
    name: str
    display_name: str
    method: str
    url_template: str
    policy: EffectivePolicy

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.url_template.strip("/").split("/")) if self.url_template.strip("/") else ()

    def match(self, method: str, segments: tuple[str, ...]) -> dict[str, str] | None:
        """Template parameters if this operation serves `method` on the (raw) path `segments`."""
        if method != self.method or len(segments) != len(self.segments):
            return None
        parameters = {}
        for template, actual in zip(self.segments, segments, strict=True):
            parameter = _PARAMETER.match(template)
            if parameter:
                if not actual:
                    return None
                parameters[parameter.group(1)] = actual
            elif template != actual:
                return None
        return parameters


@dataclass(frozen=True)
class Route:
    operation: Operation
    parameters: dict[str, str]
    path: str  # the raw path after the API's path: what the backend receives


@dataclass(frozen=True)
class Api:
    name: str
    display_name: str
    path: str
    subscription_required: bool
    subscription_header: str
    subscription_query: str
    operations: tuple[Operation, ...]

    def route(self, method: str, raw_path: str) -> Route | None:
        prefix = f"/{self.path}"
        if raw_path != prefix and not raw_path.startswith(prefix + "/"):
            return None
        rest = raw_path[len(prefix):] or "/"
        segments = tuple(rest.strip("/").split("/")) if rest != "/" else ()
        if rest.endswith("/") and rest != "/":
            return None  # '/orders/' is not '/orders'
        for operation in self.operations:
            parameters = operation.match(method.upper(), segments)
            if parameters is not None:
                return Route(operation=operation, parameters=parameters, path=rest)
        return None


def load_api(policy_dir: Path, named_values: Mapping[str, str], *, entra_tenant_id: str | None = None) -> Api:
    """Read api.json and every policy file it needs; raise PolicyError listing all problems."""
    problems: list[str] = []
    definition = _read_definition(policy_dir / API_FILE, problems)
    if definition is None:
        raise PolicyError(problems)

    def policy(file_name: str, scope: str, *, optional: bool = False) -> PolicyDocument | None:
        path = policy_dir / file_name
        if optional and not path.exists():
            return DEFAULT_GLOBAL_POLICY
        document, found = read_policy(path, named_values, scope=scope, elements=ELEMENTS,
                                      entra_tenant_id=entra_tenant_id)
        problems.extend(found)
        return document

    global_policy = policy(GLOBAL_POLICY_FILE, "global", optional=True)
    api_policy = policy(API_POLICY_FILE, "api")
    operation_policies = {name: policy(operation_policy_file(name), "operation")
                          for name in sorted({op["policy"] for op in definition["operations"] if op.get("policy")})}
    if problems:
        raise PolicyError(problems)
    assert global_policy is not None and api_policy is not None
    operations = []
    for op in definition["operations"]:
        operation_policy = operation_policies[op["policy"]] if op.get("policy") else INHERIT_ALL
        assert operation_policy is not None
        operations.append(Operation(
            name=op["name"], display_name=op.get("displayName", op["name"]), method=op["method"].upper(),
            url_template=op["urlTemplate"], policy=compose(global_policy, api_policy, operation_policy),
        ))
    key_names = definition.get("subscriptionKeyParameterNames") or {}
    return Api(
        name=definition["name"], display_name=definition.get("displayName", definition["name"]),
        path=definition["path"].strip("/"), subscription_required=definition.get("subscriptionRequired", True),
        subscription_header=key_names.get("header", "Ocp-Apim-Subscription-Key"),
        subscription_query=key_names.get("query", "subscription-key"),
        operations=tuple(operations),
    )


def load_policy_api(api_file: Path, policy_file: Path, *, path: str, named_values: Mapping[str, str],
                    entra_tenant_id: str | None = None) -> Api:
    """An API with the operations of `api_file` and one API-scope policy for all of them, no
    subscription: the sample backend (infra/modules/sample-backend.bicep deploys it so)."""
    problems: list[str] = []
    definition = _read_definition(api_file, problems)
    document, found = read_policy(policy_file, named_values, scope="api", elements=ELEMENTS,
                                  entra_tenant_id=entra_tenant_id)
    problems.extend(found)
    if problems or definition is None or document is None:
        raise PolicyError(problems)
    policy = compose(DEFAULT_GLOBAL_POLICY, document, INHERIT_ALL)
    operations = tuple(Operation(name=op["name"], display_name=op.get("displayName", op["name"]),
                                 method=op["method"].upper(), url_template=op["urlTemplate"], policy=policy)
                       for op in definition["operations"])
    return Api(name=f"{definition['name']}-sample-backend", display_name=f"{definition.get('displayName', '')} "
               "sample backend", path=path.strip("/"), subscription_required=False,
               subscription_header="Ocp-Apim-Subscription-Key", subscription_query="subscription-key",
               operations=operations)


def _read_definition(path: Path, problems: list[str]) -> dict | None:
    """api.json, checked the way APIM checks an API's operations when it is deployed."""
    try:
        definition = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc.strerror or exc}")
        return None
    except json.JSONDecodeError as exc:
        problems.append(f"{path}: not valid JSON: {exc}")
        return None
    if not isinstance(definition, dict):
        problems.append(f"{path}: must be a JSON object")
        return None
    for key, kind in (("name", str), ("path", str), ("operations", list)):
        if not isinstance(definition.get(key), kind):
            problems.append(f"{path}: '{key}' is required ({kind.__name__})")
    if not isinstance(definition.get("subscriptionRequired", True), bool):
        problems.append(f"{path}: 'subscriptionRequired' must be true or false")
    names = set()
    for index, op in enumerate(definition.get("operations") or []):
        where = f"{path}: operations[{index}]"
        if not isinstance(op, dict):
            problems.append(f"{where}: must be an object")
            continue
        for key in ("name", "method", "urlTemplate"):
            if not isinstance(op.get(key), str) or not op[key]:
                problems.append(f"{where}: '{key}' is required")
        if op.get("name") in names:
            problems.append(f"{where}: duplicate operation name '{op.get('name')}'")
        names.add(op.get("name"))
        if str(op.get("method", "")).upper() not in _METHODS:
            problems.append(f"{where}: unknown method '{op.get('method')}'")
        if op.get("policy") is not None and not re.fullmatch(r"[a-z0-9-]+", str(op["policy"])):
            problems.append(f"{where}: 'policy' must name a file operation-<policy>-policy.xml")
        problems.extend(f"{where}: {p}" for p in _template_problems(op))
    return None if problems else definition


def _template_problems(op: dict) -> list[str]:
    template = op.get("urlTemplate")
    if not isinstance(template, str):
        return []
    if not template.startswith("/") or "?" in template or "*" in template:
        return [f"urlTemplate '{template}': the stand-in supports '/segment/{{param}}' templates only"]
    declared = {p.get("name") for p in op.get("templateParameters") or [] if isinstance(p, dict)}
    used = set()
    problems = []
    for segment in template.strip("/").split("/"):
        if "{" in segment or "}" in segment:
            parameter = _PARAMETER.match(segment)
            if not parameter:
                problems.append(f"urlTemplate '{template}': a parameter must be a whole segment")
                continue
            used.add(parameter.group(1))
    if used != declared:  # APIM refuses a template whose parameters are not all declared (and vice versa)
        problems.append(f"urlTemplate '{template}' uses parameters {sorted(used)} "
                        f"but templateParameters declares {sorted(p for p in declared if p)}")
    return problems
