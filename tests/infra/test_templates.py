"""Every .bicep file parses, and the templates are shaped the way the offline tools can read."""

from __future__ import annotations

import json
import re
from typing import Any
from xml.etree import ElementTree

import pytest

from tests.infra import bicep

FILES = [str(path.relative_to(bicep.INFRA)) for path in bicep.bicep_files()]


def test_infra_has_the_expected_files() -> None:
    assert "main.bicep" in FILES
    for module in ("identities", "entra-api", "entra-role-assignments", "monitoring", "storage",
                   "keyvault", "rbac", "apim", "sample-backend", "function-app", "logic-app"):
        assert f"modules/{module}.bicep" in FILES


@pytest.mark.parametrize("file", FILES)
def test_file_parses(templates: dict[str, dict[str, Any]], file: str) -> None:
    template = templates[file]
    assert template.get("resources") or template.get("modules"), f"{file}: parsed to nothing"


@pytest.mark.parametrize("file", FILES)
def test_child_resources_are_declared_at_top_level(file: str) -> None:
    # pycep-parser (and so checkov) mis-reads nested `resource` blocks: children use `parent:`.
    nested = [line for line in bicep.source_lines(file) if re.match(r"^\s+resource\s+\w+\s+'", line)]
    assert not nested, f"{file}: nested child resources {nested}"


def test_every_module_path_exists(templates: dict[str, dict[str, Any]]) -> None:
    for file, template in templates.items():
        for symbol, module in template.get("modules", {}).items():
            target = (bicep.INFRA / file).parent / module["detail"]["path"]
            assert target.is_file(), f"{file}: module {symbol} -> {target} missing"


def test_every_module_is_used(templates: dict[str, dict[str, Any]]) -> None:
    used = {"main.bicep"}
    for file, template in templates.items():
        for module in template.get("modules", {}).values():
            used.add(str(((bicep.INFRA / file).parent / module["detail"]["path"]).resolve()
                         .relative_to(bicep.INFRA)))
    assert set(FILES) == used


def test_graph_extension_is_configured_and_declared(templates: dict[str, dict[str, Any]]) -> None:
    config = json.loads((bicep.INFRA / "bicepconfig.json").read_text())
    registry = "br:mcr.microsoft.com/bicep/extensions/microsoftgraph/v1.0:"
    assert config["extensions"]["microsoftGraphV1"].startswith(registry)
    for file, template in templates.items():
        uses_graph = any(r["type"].startswith("Microsoft.Graph/") for r in template.get("resources", {}).values())
        assert uses_graph == ("microsoftGraphV1" in template.get("extensions", {})), file


def test_parameters_file_names_only_declared_parameters(main: dict[str, Any]) -> None:
    parameters = json.loads((bicep.INFRA / "main.parameters.json").read_text())["parameters"]
    assert set(parameters) <= set(main["parameters"])
    assert parameters["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert parameters["location"]["value"] == "${AZURE_LOCATION}"


def test_optional_parts_default_off_and_cheap(main: dict[str, Any]) -> None:
    params = main["parameters"]
    assert params["deployLogicApp"]["default"] is False
    assert params["apimSku"]["default"] == "Consumption"
    assert params["separateWriterIdentity"]["default"] is True
    assert params["pythonVersion"]["default"] == "3.12"


@pytest.mark.parametrize("file", FILES)
def test_checkov_skips_are_inline_with_a_reason(file: str) -> None:
    # A skip sits inside the resource it applies to (indented) and says why: no blanket skips.
    for number, line in enumerate(bicep.source_lines(file), start=1):
        if "checkov:skip" not in line:
            continue
        assert re.match(r"^  // checkov:skip=CKV2?_AZURE_\d+:\S.{30,}$", line), f"{file}:{number}: {line.strip()}"


# APIM reads a policy's value as XML (format 'xml', so entities such as &quot; are decoded) or
# as the raw text typed in the portal ('rawxml', encoded by APIM itself, so entities would be
# encoded twice and break the policy expressions that contain them).
_XML_ENTITY = re.compile(r"&(?:quot|amp|lt|gt|apos|#[0-9]+|#x[0-9a-fA-F]+);")


def _policy_files(template: dict[str, Any], file: str, value: Any) -> list[Any]:
    calls = bicep.functions(value, "load_text_content")
    if not calls:  # a variable (e.g. a map of policies by name, indexed per operation)
        names = {n for n in bicep.walk(value) if isinstance(n, str) and n in template.get("variables", {})}
        calls = [call for name in sorted(names)
                 for call in bicep.functions(bicep.variable(template, name), "load_text_content")]
    return [(bicep.INFRA / file).parent / call["file_path"] for call in calls]


def test_each_policy_is_sent_in_the_format_its_file_is_written_in(templates: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for file, template in templates.items():
        for resource in template.get("resources", {}).values():
            if not resource["type"].lower().endswith("/policies") or resource.get("existing"):
                continue
            properties = bicep.body(resource)["properties"]
            paths = _policy_files(template, file, properties["value"])
            assert paths, f"{file}: a policy whose text does not come from a file"
            for path in paths:
                text = path.read_text(encoding="utf-8")
                if properties["format"] == "rawxml":
                    assert not _XML_ENTITY.search(text), f"{path.name} is XML-encoded: deploy it with format 'xml'"
                else:
                    assert properties["format"] == "xml", properties["format"]
                    ElementTree.fromstring(text)  # noqa: S314 - a file of this repository, parsed as APIM will
                checked += 1
    assert checked >= 4  # API, operations (read, write) and the sample backend


def _decorator(parameter: dict[str, Any], kind: str) -> Any:
    return next((d["argument"] for d in parameter["decorators"] if d["type"] == kind), None)


def test_location_is_limited_to_flex_consumption_regions_and_azd_asks_for_one(main: dict[str, Any]) -> None:
    location = main["parameters"]["location"]
    assert _decorator(location, "metadata") == {"azd": {"type": "location"}}
    allowed = _decorator(location, "allowed")
    assert allowed, "location is not limited to Flex Consumption regions"
    # A sample of regions without Flex Consumption, and canary regions, stay out.
    assert not {"westindia", "jioindiawest", "eastus2euap", "centraluseuap", "qatarcentral"} & set(allowed)
    assert {"swedencentral", "eastus", "westeurope"} <= set(allowed)
    assert allowed == sorted(allowed) and len(allowed) == len(set(allowed))
    # The examples in the READMEs use an allowed region.
    for readme in (bicep.ROOT / "README.md", bicep.INFRA / "README.md"):
        for region in re.findall(r"AZURE_LOCATION (\w+)|LOCATION=(\w+)", readme.read_text()):
            assert set(region) - {""} <= set(allowed), (readme.name, region)


def test_python_versions_are_the_same_in_main_and_the_module(templates: dict[str, Any]) -> None:
    offered = _decorator(templates["main.bicep"]["parameters"]["pythonVersion"], "allowed")
    accepted = _decorator(templates["modules/function-app.bicep"]["parameters"]["pythonVersion"], "allowed")
    assert offered == accepted


def test_app_roles_are_assigned_as_late_as_possible(main: dict[str, Any]) -> None:
    # Entra replicates new managed identities with a delay: the assignments wait for the slowest
    # parts (API Management, then Key Vault, then the Azure role assignments), and the app for them.
    modules = main["modules"]
    assert modules["entraRoleAssignments"]["config"]["dependsOn"] == ["rbac"]
    assert "entraRoleAssignments" in modules["functionApp"]["config"]["dependsOn"]


def test_first_run_table_gives_the_exact_commands() -> None:
    text = (bicep.INFRA / "README.md").read_text()
    table = text[text.index("## First run: what only Azure can tell"):text.index("## Parameters")]
    for needle in ("Not a valid reference update", "azd provision",
                   "az apim deletedservice purge --service-name apim-<token> --location <region>",
                   "az keyvault purge --name kv-<token> --location <region>",
                   "MissingSubscriptionRegistration", "AZURE_SERVICE_MANAGEMENT_REFERENCE", "azd down --purge"):
        assert needle in table, needle


# The stricter linter rules `az bicep build` / `az bicep lint` apply (CI runs both): mistakes the
# offline checks cannot see fail the build instead of passing as warnings.
STRICT_RULES = ("use-safe-access", "no-unnecessary-dependson", "use-recognized-resource-type",
                "use-secure-value-for-secure-inputs", "no-unused-existing-resources", "no-unused-params",
                "no-unused-vars", "outputs-should-not-contain-secrets", "secure-secrets-in-params",
                "use-resource-symbol-reference", "use-parent-property", "no-hardcoded-env-urls")


def test_bicepconfig_makes_the_important_linter_rules_errors() -> None:
    config = json.loads((bicep.INFRA / "bicepconfig.json").read_text())
    rules = config["analyzers"]["core"]["rules"]
    assert config["analyzers"]["core"]["enabled"] is True
    for rule in STRICT_RULES:
        assert rules.get(rule, {}).get("level") == "error", rule
    # Old api-versions are reported, not fatal: a newer one needs its type data checked first.
    assert rules["use-recent-api-versions"]["level"] == "warning"


def test_no_dependson_that_a_reference_already_implies(templates: dict[str, dict[str, Any]]) -> None:
    # What no-unnecessary-dependson reports, for module and resource dependsOn lists.
    for file, template in templates.items():
        for kind in ("modules", "resources"):
            for symbol, item in template.get(kind, {}).items():
                config = bicep.body(item) if kind == "resources" else item["config"]
                for dependency in config.get("dependsOn", config.get("depends_on", [])) or []:
                    referenced = [n for n in bicep.walk({k: v for k, v in config.items() if k != "dependsOn"})
                                  if isinstance(n, str) and (n == dependency or n.startswith(f"{dependency}."))]
                    assert not referenced, f"{file}: {symbol} depends on {dependency} and references it"
