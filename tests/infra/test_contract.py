"""What infra/ deploys matches the contracts the app and the devstack rely on.

The app's settings (its own table, `shared.settings.SETTINGS`); the API definition and policy
files in infra/apim/ (the very files the devstack enforces); the named values those policies
use; the app role names and token version the devstack issues tokens with.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from shared.settings import SETTINGS
from tests.infra import bicep

APIM_DIR = bicep.INFRA / "apim"
# The app settings contract: the default connection's settings and the exporter's two.
DESIGN_SETTINGS = {
    "APIM_BASE_URL", "APIM_SUBSCRIPTION_KEY", "API_APP_ID_URI", "MANAGED_IDENTITY_CLIENT_ID",
    "MANAGED_IDENTITY_WRITE_CLIENT_ID", "AZURE_TENANT_ID", "TIMER_SCHEDULE", "TIMER_API_PATH",
    "APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING",
}
NAMED_VALUES = {"tenant-id", "api-app-id-uri", "api-client-id", "openid-config-url", "reader-role", "writer-role",
                "backend-app-id-uri", "apim-backend-client-id", "reader-client-id", "writer-client-id",
                "developer-client-id"}
# Created with the sample backend (modules/sample-backend.bicep), for its policy.
SAMPLE_BACKEND_NAMED_VALUES = {"sample-backend-client-id", "sample-backend-app-id-uri"}


def _devstack_config() -> dict[str, Any]:
    return json.loads((bicep.ROOT / "devstack" / "config.json").read_text())


# ---- app settings -------------------------------------------------------------------------------


def test_the_contract_is_the_apps_own_settings_table() -> None:
    exporter = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
    assert {setting.name for setting in SETTINGS} | exporter == DESIGN_SETTINGS


def test_every_design_setting_is_set_on_the_function_app(app_settings: dict[str, Any]) -> None:
    assert DESIGN_SETTINGS <= set(app_settings)


def test_settings_values(app_settings: dict[str, Any]) -> None:
    assert app_settings["APIM_BASE_URL"] == "apimBaseUrl"
    assert app_settings["API_APP_ID_URI"] == "apiAppIdUri"
    assert app_settings["MANAGED_IDENTITY_CLIENT_ID"] == "readerClientId"
    assert "writerClientId" in str(app_settings["MANAGED_IDENTITY_WRITE_CLIENT_ID"])
    assert app_settings["TIMER_SCHEDULE"] == "timerSchedule"
    assert app_settings["TIMER_API_PATH"] == "timerApiPath"
    assert app_settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == (
        "ClientId=${hostIdentity.properties.clientId};Authorization=AAD")
    # Exactly one of worker and app configures telemetry: the setting is always an explicit choice.
    telemetry = app_settings["PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY"]["operator"]["operands"]
    assert (telemetry["true_value"], telemetry["false_value"]) == ("true", "false")


def test_settings_flow_from_main_with_the_right_values(main: dict[str, Any]) -> None:
    params = main["modules"]["functionApp"]["config"]["params"]
    assert bicep.variable(main, "timerApiPath") == "/status"
    assert params["timerApiPath"] == "timerApiPath"
    assert bicep.accessor(params["apiAppIdUri"]) == ["entraApi", "outputs", "identifierUri"]
    assert bicep.accessor(params["apimBaseUrl"]) == ["apim", "outputs", "apiBaseUrl"]
    assert bicep.accessor(params["subscriptionKeyItemUri"]) == ["keyVault", "outputs", "itemUri"]
    assert main["parameters"]["timerSchedule"]["default"] == "0 */5 * * * *"


def test_apim_base_url_is_gateway_plus_api_path(templates: dict[str, Any]) -> None:
    outputs = templates["modules/apim.bicep"]["outputs"]
    assert outputs["apiBaseUrl"]["value"] == "${apim.properties.gatewayUrl}/${api.path}"


def test_host_storage_is_identity_based(app_settings: dict[str, Any]) -> None:
    assert app_settings["AzureWebJobsStorage__credential"] == "managedidentity"
    assert bicep.accessor(app_settings["AzureWebJobsStorage__clientId"]) == ["hostIdentity", "properties", "clientId"]
    assert "AzureWebJobsStorage" not in app_settings  # no connection string
    # Flex Consumption takes the runtime from functionAppConfig and rejects these.
    for legacy in ("FUNCTIONS_WORKER_RUNTIME", "FUNCTIONS_EXTENSION_VERSION", "WEBSITE_RUN_FROM_PACKAGE",
                   "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING"):
        assert legacy not in app_settings


# ---- the API and its policies: the files the devstack runs ------------------------------------


def test_devstack_reads_policies_from_infra_apim() -> None:
    assert _devstack_config()["apim"]["policy_dir"] == "infra/apim"


def test_every_inlined_file_exists(templates: dict[str, Any]) -> None:
    for path, file in bicep.load_paths(templates).items():
        assert path.is_file(), f"{file} loads {path}, which does not exist"


def test_infra_deploys_exactly_the_policy_files_the_devstack_reads(templates: dict[str, Any]) -> None:
    loaded = {path for path in bicep.load_paths(templates) if path.parent == APIM_DIR.resolve()}
    on_disk = {path.resolve() for path in APIM_DIR.iterdir() if path.suffix in (".xml", ".json")}
    assert loaded == on_disk, "every infra/apim file must be deployed, and nothing else from there"
    for name in ("api.json", "api-policy.xml", "operation-read-policy.xml", "operation-write-policy.xml"):
        assert (APIM_DIR / name).resolve() in loaded, name


def _api() -> dict[str, Any]:
    return json.loads((APIM_DIR / "api.json").read_text())


def test_api_definition_contract() -> None:
    api = _api()
    assert (api["name"], api["path"], api["subscriptionRequired"]) == ("orders-api", "orders", True)
    routes = {(op["method"], op["urlTemplate"]): op["policy"] for op in api["operations"]}
    assert routes == {("GET", "/status"): "read", ("GET", "/orders"): "read",
                      ("GET", "/orders/{id}"): "read", ("POST", "/orders"): "write"}
    for op in api["operations"]:
        for name in re.findall(r"\{(\w+)\}", op["urlTemplate"]):
            assert name in {p["name"] for p in op.get("templateParameters", [])}, op["name"]


def test_operation_policy_map_covers_every_operation(templates: dict[str, Any]) -> None:
    policies = bicep.variable(templates["modules/apim.bicep"], "operationPolicies")
    assert {op["policy"] for op in _api()["operations"]} <= set(policies)
    assert policies["read"]["function"]["parameters"]["file_path"] == "../apim/operation-read-policy.xml"
    assert policies["write"]["function"]["parameters"]["file_path"] == "../apim/operation-write-policy.xml"


def test_named_values_are_the_contract_and_cover_the_policies(templates: dict[str, Any]) -> None:
    # pycep keeps the quotes of quoted object keys ('tenant-id').
    named = {key.strip("'"): value for key, value in
             bicep.variable(templates["modules/apim.bicep"], "namedValues").items()}
    assert set(named) == NAMED_VALUES
    assert named["openid-config-url"] == (
        "${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0/.well-known/openid-configuration")
    assert (named["reader-role"], named["writer-role"]) == ("readRole", "writeRole")
    assert named["backend-app-id-uri"] == "backendAppIdUri"
    used = {name for path in APIM_DIR.glob("*.xml") for name in re.findall(r"\{\{([\w.-]+)\}\}", path.read_text())}
    assert used <= NAMED_VALUES, f"policies use named values infra does not create: {used - NAMED_VALUES}"


def test_the_sample_backends_named_values_cover_its_policy(templates: dict[str, Any]) -> None:
    named = {key.strip("'"): value for key, value in
             bicep.variable(templates["modules/sample-backend.bicep"], "namedValues").items()}
    assert set(named) == SAMPLE_BACKEND_NAMED_VALUES
    used = set(re.findall(r"\{\{([\w.-]+)\}\}", _sample_backend_policy().read_text()))
    available = NAMED_VALUES | SAMPLE_BACKEND_NAMED_VALUES
    assert used <= available, f"the sample backend uses named values infra does not create: {used - available}"
    assert "apim-backend-client-id" in used  # only API Management's own identity is accepted


def test_roles_and_token_version_match_the_devstack(main: dict[str, Any], templates: dict[str, Any]) -> None:
    api = _devstack_config()["api"]
    assert bicep.variable(main, "roles") == api["roles"]
    app = _graph(templates, "modules/entra-api.bicep", "Microsoft.Graph/applications")
    assert app["api"]["requestedAccessTokenVersion"] == api["accepted_token_version"]
    # Without an app role, no token: the devstack must refuse it just as Entra will.
    principal = _graph(templates, "modules/entra-api.bicep", "Microsoft.Graph/servicePrincipals")
    assert principal["appRoleAssignmentRequired"] is api["assignment_required"]


def _graph(templates: dict[str, Any], file: str, type_: str) -> dict[str, Any]:
    [found] = [body for f, _, body in bicep.resources(templates, type_) if f == file]
    return found


# ---- the sample backend -------------------------------------------------------------------------


def _sample_backend_policy() -> Path:
    return bicep.INFRA / "sample-backend" / "policy.xml"


def test_sample_backend_policy_is_well_formed_and_answers_every_operation() -> None:
    root = ET.parse(_sample_backend_policy()).getroot()  # noqa: S314 - a file of this repository
    assert root.tag == "policies"
    conditions = " ".join(when.get("condition", "") for when in root.iter("when"))
    for op in _api()["operations"]:
        assert f'"{op["name"]}"' in conditions, f"sample backend has no answer for {op['name']}"


def _client_application_ids(check: ET.Element) -> list[str | None]:
    return [a.text for ids in check.iter("client-application-ids") for a in ids.iter("application-id")]


def test_only_apims_identity_may_call_the_sample_backend() -> None:
    root = ET.parse(_sample_backend_policy()).getroot()  # noqa: S314 - a file of this repository
    [check] = root.find("inbound").iter("validate-azure-ad-token")  # type: ignore[union-attr]
    audiences = {a.text for a in check.iter("audience")}
    assert audiences == {"{{sample-backend-client-id}}", "{{sample-backend-app-id-uri}}"}
    assert _client_application_ids(check) == ["{{apim-backend-client-id}}"]
    # ...and the Orders API calls its backend with that identity's token, not the caller's.
    api_policy = ET.parse(APIM_DIR / "api-policy.xml").getroot()  # noqa: S314
    [auth] = api_policy.iter("authentication-managed-identity")
    assert (auth.get("resource"), auth.get("client-id")) == ("{{backend-app-id-uri}}", "{{apim-backend-client-id}}")


def test_every_validate_azure_ad_token_lists_its_client_applications() -> None:
    # APIM refuses validate-azure-ad-token without <client-application-ids> (MicrosoftDocs/azure-docs#121338).
    files = [*APIM_DIR.glob("*.xml"), _sample_backend_policy()]
    checks = [check for path in files for check in ET.parse(path).getroot().iter("validate-azure-ad-token")]  # noqa: S314
    assert len(checks) == 2
    assert all(_client_application_ids(check) for check in checks)


def test_the_orders_api_names_the_apps_identities_as_its_callers(templates: dict[str, Any]) -> None:
    [check] = ET.parse(APIM_DIR / "api-policy.xml").getroot().iter("validate-azure-ad-token")  # noqa: S314
    assert _client_application_ids(check) == ["{{reader-client-id}}", "{{writer-client-id}}", "{{developer-client-id}}"]
    named = {key.strip("'"): value for key, value in
             bicep.variable(templates["modules/apim.bicep"], "namedValues").items()}
    assert (named["reader-client-id"], named["writer-client-id"]) == ("readerClientId", "writerClientId")
    assert named["developer-client-id"] == "04b07795-8ddb-461a-bbee-02f9e1bf7b46"  # the Azure CLI


def test_apim_calls_the_backend_with_its_user_assigned_identity(templates: dict[str, Any]) -> None:
    _, service = bicep.one(templates, "Microsoft.ApiManagement/service")
    assert service["identity"]["type"] == "SystemAssigned, UserAssigned"
    named = {key.strip("'"): value for key, value in
             bicep.variable(templates["modules/apim.bicep"], "namedValues").items()}
    assert named["apim-backend-client-id"] == "backendIdentityClientId"


def test_the_sample_backends_app_registration_matches_the_devstack(templates: dict[str, Any]) -> None:
    sample = _devstack_config()["sample_backend"]
    app = _graph(templates, "modules/entra-sample-backend.bicep", "Microsoft.Graph/applications")
    assert app["api"]["requestedAccessTokenVersion"] == sample["accepted_token_version"]
    principal = _graph(templates, "modules/entra-sample-backend.bicep", "Microsoft.Graph/servicePrincipals")
    assert principal["appRoleAssignmentRequired"] is sample["assignment_required"] is False
    assert "appRoles" not in app  # no role to assign: the policy checks the identity itself


def test_your_own_backend_needs_its_app_id_uri(templates: dict[str, Any]) -> None:
    main = templates["main.bicep"]
    assert main["parameters"]["backendAppIdUri"]["default"] == ""
    audience = bicep.variable(main, "backendTokenAudience")["operator"]["operands"]
    assert (audience["condition"], audience["true_value"]) == ("useSampleBackend", "sampleBackendAppIdUri")
    assert "fail(" in "".join(bicep.source_lines("main.bicep"))  # empty with backendServiceUrl: the deployment stops


def test_sample_backend_only_when_no_backend_url(templates: dict[str, Any]) -> None:
    apim = templates["modules/apim.bicep"]
    assert bicep.variable(apim, "useSampleBackend") == {
        "function": {"type": "empty", "parameters": {"item_to_test": "backendServiceUrl"}}}
    assert apim["modules"]["sampleBackend"]["config"]["condition"] == "useSampleBackend"
    assert templates["main.bicep"]["parameters"]["backendServiceUrl"]["default"] == ""
