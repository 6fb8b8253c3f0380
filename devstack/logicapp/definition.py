"""A Logic Apps workflow definition (the file infra/ deploys), read into typed parts.

Reading is strict, as for the APIM policies: every trigger type, action type, property and
expression function the runner does not implement is reported with the file and the place,
all at once, and the runner refuses to start (WorkflowError). A schedule or an authentication
that is silently skipped would make a passing run mean nothing.

Implemented: workflow parameters of type string and securestring (with `defaultValue` and
`metadata`); one Recurrence trigger with `frequency` and `interval`; `Http` actions that start
with the run (`runAfter: {}`) with `method`, `uri`, `headers` and `ManagedServiceIdentity`
authentication (`identity`, `audience`); `runtimeConfiguration.secureData`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.logicapp.expressions import ExpressionError, Template, compile_value

SCHEMA = "https://schema.management.azure.com/providers/Microsoft.Logic/schemas/2016-06-01/workflowdefinition.json#"
PARAMETER_TYPES = ("string", "securestring")
# Recurrence frequencies that are a fixed number of seconds (Month is not: it is refused).
FREQUENCY_SECONDS = {"Second": 1, "Minute": 60, "Hour": 3600, "Day": 86400, "Week": 7 * 86400}
HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
SECURE_DATA_PROPERTIES = ("inputs", "outputs")
# Logic Apps' default audience for ManagedServiceIdentity authentication (Azure Resource Manager).
DEFAULT_AUDIENCE = "https://management.azure.com/"
SYSTEM_ASSIGNED = "SystemAssigned"


def _is(value: Any, name: str) -> bool:
    """Logic Apps reads type names and frequencies without regard to case ("Http", "http")."""
    return isinstance(value, str) and value.lower() == name.lower()


def _frequency(value: Any) -> str | None:
    return next((name for name in FREQUENCY_SECONDS if _is(value, name)), None)


class WorkflowError(ValueError):
    """The workflow definition uses something the runner does not implement, or is malformed.

    Raised when the stand-in starts, listing every problem with its file and place.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        listing = "\n  - ".join(self.problems)
        super().__init__(f"the Logic App stand-in refuses this workflow definition:\n  - {listing}")


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: str | None = None

    @property
    def secure(self) -> bool:
        return self.type == "securestring"


@dataclass(frozen=True)
class Recurrence:
    name: str
    frequency: str
    interval: int

    @property
    def seconds(self) -> int:
        return FREQUENCY_SECONDS[self.frequency] * self.interval


@dataclass(frozen=True)
class ManagedIdentityAuth:
    identity: Template  # "SystemAssigned" or the user-assigned identity's resource ID
    audience: Template


@dataclass(frozen=True)
class HttpAction:
    name: str
    method: Template
    uri: Template
    headers: tuple[tuple[str, Template], ...]
    authentication: ManagedIdentityAuth | None
    secure_inputs: bool
    secure_outputs: bool


@dataclass(frozen=True)
class Workflow:
    file: Path
    parameters: Mapping[str, Parameter]
    trigger: Recurrence
    actions: tuple[HttpAction, ...]


def load_workflow(path: Path) -> Workflow:
    """Read and check a definition file; raise WorkflowError listing every problem."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WorkflowError([f"{path}: cannot read the definition: {exc}"]) from None
    reader = _Reader(path)
    workflow = reader.workflow(raw)
    if reader.problems:
        raise WorkflowError(reader.problems)
    assert workflow is not None
    return workflow


class _Reader:
    """Collects problems instead of stopping at the first one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[str] = []

    def problem(self, where: str, what: str) -> None:
        self.problems.append(f"{self.path}: {where}: {what}")

    def keys(self, where: str, node: Mapping[str, Any], allowed: tuple[str, ...], required: tuple[str, ...] = ()
             ) -> None:
        for key in node:
            if key not in allowed:
                self.problem(where, f"unsupported property '{key}'")
        for key in required:
            if key not in node:
                self.problem(where, f"missing '{key}'")

    def obj(self, where: str, node: Any) -> Mapping[str, Any]:
        if isinstance(node, Mapping):
            return node
        self.problem(where, f"must be an object, not {type(node).__name__}")
        return {}

    def template(self, where: str, node: Any) -> Template:
        if not isinstance(node, str):
            self.problem(where, f"must be a string, not {type(node).__name__}")
            return Template(("",))
        try:
            return compile_value(node)
        except ExpressionError as exc:
            self.problem(where, f"unsupported {exc}")
            return Template(("",))

    # --- the document -----------------------------------------------------------------------

    def workflow(self, raw: Any) -> Workflow | None:
        root = self.obj("definition", raw)
        self.keys("definition", root, ("$schema", "contentVersion", "parameters", "triggers", "actions", "outputs"),
                  required=("$schema", "triggers", "actions"))
        if root.get("$schema", SCHEMA) != SCHEMA:
            self.problem("$schema", f"unsupported schema {root['$schema']!r} (expected {SCHEMA})")
        if root.get("outputs", {}) != {}:
            self.problem("outputs", "workflow outputs are not implemented")
        parameters = dict(self.parameters(self.obj("parameters", root.get("parameters", {}))))
        trigger = self.trigger(self.obj("triggers", root.get("triggers", {})))
        actions = tuple(self.actions(self.obj("actions", root.get("actions", {}))))
        for action in actions:
            self.check_references(action, parameters)
        if trigger is None:
            return None
        return Workflow(file=self.path, parameters=parameters, trigger=trigger, actions=actions)

    def parameters(self, node: Mapping[str, Any]) -> Iterator[tuple[str, Parameter]]:
        for name, spec in node.items():
            where = f"parameters.{name}"
            spec = self.obj(where, spec)
            self.keys(where, spec, ("type", "defaultValue", "metadata"), required=("type",))
            kind = spec.get("type")
            if kind not in PARAMETER_TYPES:
                self.problem(where, f"unsupported parameter type {kind!r} (implemented: {', '.join(PARAMETER_TYPES)})")
                continue
            default = spec.get("defaultValue")
            if default is not None and not isinstance(default, str):
                self.problem(where, "defaultValue must be a string")
            yield name, Parameter(name=name, type=kind, default=default)

    def trigger(self, node: Mapping[str, Any]) -> Recurrence | None:
        if len(node) != 1:
            self.problem("triggers", f"exactly one trigger is implemented, found {len(node)}")
        found = None
        for name, spec in node.items():
            where = f"triggers.{name}"
            spec = self.obj(where, spec)
            if not _is(spec.get("type"), "Recurrence"):
                self.problem(where, f"unsupported trigger type {spec.get('type')!r} (implemented: Recurrence)")
                continue
            self.keys(where, spec, ("type", "recurrence"), required=("recurrence",))
            recurrence = self.obj(f"{where}.recurrence", spec.get("recurrence", {}))
            self.keys(f"{where}.recurrence", recurrence, ("frequency", "interval"), required=("frequency", "interval"))
            frequency, interval = _frequency(recurrence.get("frequency")), recurrence.get("interval")
            if frequency is None:
                self.problem(f"{where}.recurrence.frequency", f"unsupported frequency {recurrence.get('frequency')!r} "
                             f"(implemented: {', '.join(FREQUENCY_SECONDS)})")
                continue
            if not isinstance(interval, int) or isinstance(interval, bool) or interval < 1:
                self.problem(f"{where}.recurrence.interval", "must be a whole number of at least 1")
                continue
            found = found or Recurrence(name=name, frequency=frequency, interval=interval)
        return found

    def actions(self, node: Mapping[str, Any]) -> Iterator[HttpAction]:
        if not node:
            self.problem("actions", "the workflow has no action")
        for name, spec in node.items():
            where = f"actions.{name}"
            spec = self.obj(where, spec)
            if not _is(spec.get("type"), "Http"):
                self.problem(where, f"unsupported action type {spec.get('type')!r} (implemented: Http)")
                continue
            self.keys(where, spec, ("type", "inputs", "runAfter", "runtimeConfiguration"), required=("inputs",))
            if spec.get("runAfter", {}) != {}:
                self.problem(f"{where}.runAfter", "only actions that start with the run (runAfter: {}) are implemented")
            secure = self.secure_data(where, self.obj(f"{where}.runtimeConfiguration",
                                                      spec.get("runtimeConfiguration", {})))
            action = self.http(name, where, self.obj(f"{where}.inputs", spec.get("inputs", {})), secure)
            if action is not None:
                yield action

    def secure_data(self, where: str, node: Mapping[str, Any]) -> set[str]:
        self.keys(f"{where}.runtimeConfiguration", node, ("secureData",))
        secure = self.obj(f"{where}.runtimeConfiguration.secureData", node.get("secureData", {}))
        self.keys(f"{where}.runtimeConfiguration.secureData", secure, ("properties",))
        properties = secure.get("properties", [])
        if not isinstance(properties, list) or any(p not in SECURE_DATA_PROPERTIES for p in properties):
            self.problem(f"{where}.runtimeConfiguration.secureData.properties",
                         f"must be a list of {' and '.join(repr(p) for p in SECURE_DATA_PROPERTIES)}")
            return set()
        return set(properties)

    def http(self, name: str, where: str, inputs: Mapping[str, Any], secure: set[str]) -> HttpAction | None:
        where = f"{where}.inputs"
        self.keys(where, inputs, ("method", "uri", "headers", "authentication"), required=("method", "uri"))
        method = self.template(f"{where}.method", inputs.get("method", "GET"))
        if not method.parameters and method.evaluate({}) not in HTTP_METHODS:
            self.problem(f"{where}.method", f"unsupported method {method.evaluate({})!r}")
        headers = tuple((header, self.template(f"{where}.headers.{header}", value))
                        for header, value in self.obj(f"{where}.headers", inputs.get("headers", {})).items())
        auth = None
        if "authentication" in inputs:
            auth = self.authentication(f"{where}.authentication", self.obj(f"{where}.authentication",
                                                                             inputs["authentication"]))
        return HttpAction(name=name, method=method, uri=self.template(f"{where}.uri", inputs.get("uri", "")),
                          headers=headers, authentication=auth,
                          secure_inputs="inputs" in secure, secure_outputs="outputs" in secure)

    def authentication(self, where: str, node: Mapping[str, Any]) -> ManagedIdentityAuth | None:
        if not _is(node.get("type"), "ManagedServiceIdentity"):
            self.problem(where, f"unsupported authentication type {node.get('type')!r} "
                                "(implemented: ManagedServiceIdentity)")
            return None
        self.keys(where, node, ("type", "identity", "audience"))
        return ManagedIdentityAuth(identity=self.template(f"{where}.identity", node.get("identity", SYSTEM_ASSIGNED)),
                                   audience=self.template(f"{where}.audience", node.get("audience", DEFAULT_AUDIENCE)))

    def check_references(self, action: HttpAction, parameters: Mapping[str, Parameter]) -> None:
        templates = [action.method, action.uri, *(value for _, value in action.headers)]
        if action.authentication:
            templates += [action.authentication.identity, action.authentication.audience]
        for name in sorted({ref for template in templates for ref in template.parameters}):
            if name not in parameters:
                self.problem(f"actions.{action.name}", f"parameters('{name}') is not declared in 'parameters'")
