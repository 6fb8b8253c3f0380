"""The security properties the template promises, asserted on the parsed templates.

Identities are user-assigned, local (key) auth is off everywhere it exists, the subscription key
lives in Key Vault (RBAC) behind a Key Vault reference, every role is a known least-privilege
built-in role with a comment saying who needs it, HTTPS/TLS 1.2+/no FTP, and no output is secret.
"""

from __future__ import annotations

import re
from typing import Any

from tests.infra import bicep

# Built-in Azure role definition IDs the template may assign, and why. Anything broader (Owner,
# Contributor, *Data Contributor on a whole vault, ...) fails test_only_known_roles_are_assigned.
KNOWN_ROLES = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",  # host storage + deployment package
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",  # Entra-auth App Insights ingestion
    "4633458b-17de-408a-b874-0445c86b69e6": "Key Vault Secrets User",  # resolve the Key Vault reference
}


# ---- identities -----------------------------------------------------------------------------


def test_function_app_uses_only_user_assigned_identities(function_app: dict[str, Any]) -> None:
    assert function_app["identity"]["type"] == "UserAssigned"
    assert function_app["kind"] == "functionapp,linux"


def test_function_app_carries_host_reader_and_optional_writer(templates: dict[str, Any]) -> None:
    file, _ = bicep.one(templates, "Microsoft.Web/sites")
    identities = bicep.variable(templates[file], "userAssignedIdentities")
    (union,) = bicep.functions(identities, "union")
    assert set(union["arg_1"]) == {"'${hostIdentity.id}'", "'${readerIdentityId}'"}
    # The writer is attached only when it exists.
    assert "'${writerIdentityId}'" in str(union["arg_2"])


def test_the_user_assigned_identities_writer_optional(templates: dict[str, Any]) -> None:
    # The app's three (host, reader, writer) and API Management's for its backend calls.
    template = templates["modules/identities.bicep"]
    found = {symbol: r for symbol, r in template["resources"].items()
             if r["type"] == "Microsoft.ManagedIdentity/userAssignedIdentities"}
    assert set(found) == {"hostIdentity", "readerIdentity", "writerIdentity", "apimBackendIdentity"}
    assert found["writerIdentity"]["config"]["condition"] == "separateWriterIdentity"


def test_no_resource_has_a_system_assigned_identity_except_apim(templates: dict[str, Any]) -> None:
    for file, template in templates.items():
        for symbol, resource in template.get("resources", {}).items():
            identity = bicep.body(resource).get("identity") if not resource.get("existing") else None
            if identity and "SystemAssigned" in str(identity["type"]):
                # APIM's own identity only sends its gateway logs to App Insights.
                assert resource["type"] == "Microsoft.ApiManagement/service", f"{file}: {symbol}"


def test_logic_app_calls_with_the_reader_identity(templates: dict[str, Any]) -> None:
    # Its definition (a file of its own) and its parameters: tests/infra/test_logic_app.py.
    _, workflow = bicep.one(templates, "Microsoft.Logic/workflows")
    assert workflow["identity"]["type"] == "UserAssigned"


# ---- local auth off, HTTPS, TLS, FTP ------------------------------------------------------------


def test_app_insights_and_workspace_have_local_auth_disabled(templates: dict[str, Any]) -> None:
    _, appi = bicep.one(templates, "Microsoft.Insights/components")
    assert appi["properties"]["DisableLocalAuth"] is True
    _, workspace = bicep.one(templates, "Microsoft.OperationalInsights/workspaces")
    assert workspace["properties"]["features"]["disableLocalAuth"] is True


def test_storage_is_entra_only_private_blobs_tls12(templates: dict[str, Any]) -> None:
    _, storage = bicep.one(templates, "Microsoft.Storage/storageAccounts")
    props = storage["properties"]
    assert props["allowSharedKeyAccess"] is False
    assert props["defaultToOAuthAuthentication"] is True
    assert props["allowBlobPublicAccess"] is False
    assert props["minimumTlsVersion"] == "TLS1_2"
    assert props["supportsHttpsTrafficOnly"] is True
    _, container = bicep.one(templates, "Microsoft.Storage/storageAccounts/blobServices/containers")
    assert container["properties"]["publicAccess"] == "None"


def test_storage_account_name_is_valid(templates: dict[str, Any], main: dict[str, Any]) -> None:
    # checkov cannot evaluate the computed name (CKV_AZURE_43 is skipped for that reason): check it here.
    _, storage = bicep.one(templates, "Microsoft.Storage/storageAccounts")
    assert storage["name"] == "st${resourceToken}"
    token = bicep.variable(main, "resourceToken")
    assert bicep.functions(token, "to_lower") and bicep.functions(token, "unique_string")  # 13 [a-z0-9]


def test_function_app_https_tls12_no_ftp_no_basic_auth(templates: dict[str, Any], function_app: dict[str, Any]) -> None:
    props = function_app["properties"]
    assert props["httpsOnly"] is True
    site_config = props["siteConfig"]
    assert site_config["minTlsVersion"] in ("1.2", "1.3")
    assert site_config["scmMinTlsVersion"] in ("1.2", "1.3")
    # Flex Consumption has no FTP(S) endpoint (ftpsState is deprecated there, see test_flex.py);
    # FTP and SCM basic-auth publishing are denied instead.
    policies = {body["name"]: body["properties"]["allow"]
                for _, _, body in bicep.resources(templates, "Microsoft.Web/sites/basicPublishingCredentialsPolicies")}
    assert policies == {"ftp": False, "scm": False}


def test_flex_consumption_python_with_identity_based_deployment(templates: dict[str, Any],
                                                               function_app: dict[str, Any]) -> None:
    _, plan = bicep.one(templates, "Microsoft.Web/serverfarms")
    assert plan["sku"] == {"tier": "FlexConsumption", "name": "FC1"}
    assert plan["properties"]["reserved"] is True
    config = function_app["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "pythonVersion"}
    file, _ = bicep.one(templates, "Microsoft.Web/sites")
    allowed = next(d["argument"] for d in templates[file]["parameters"]["pythonVersion"]["decorators"]
                   if d["type"] == "allowed")
    # Flex Consumption supports 3.10-3.12; the app needs 3.11 or later (pyproject.toml).
    assert "3.12" in allowed
    assert set(allowed) == {"3.11", "3.12"}
    auth = config["deployment"]["storage"]["authentication"]
    assert auth["type"] == "UserAssignedIdentity"
    assert bicep.accessor(auth["userAssignedIdentityResourceId"]) == ["hostIdentity", "id"]


def test_apim_api_is_https_only_with_subscription_and_no_tracing(templates: dict[str, Any]) -> None:
    for _, symbol, api in bicep.resources(templates, "Microsoft.ApiManagement/service/apis"):
        assert api["properties"]["protocols"] == ["https"], symbol
    for _, symbol, subscription in bicep.resources(templates, "Microsoft.ApiManagement/service/subscriptions"):
        assert subscription["properties"]["allowTracing"] is False, symbol
    apim_file, apim = bicep.one(templates, "Microsoft.ApiManagement/service")
    assert apim["properties"]["customProperties"]["operator"]["operands"]["false_value"] == "tlsHardening"
    hardening = {key.strip("'"): value for key, value in bicep.variable(templates[apim_file], "tlsHardening").items()}
    prefix = "Microsoft.WindowsAzure.ApiManagement.Gateway.Security."
    for protocol in ("Protocols.Tls10", "Protocols.Tls11", "Backend.Protocols.Tls10", "Backend.Protocols.Tls11"):
        assert hardening[prefix + protocol] == "False", protocol


def test_apim_diagnostics_do_not_log_headers_or_bodies(templates: dict[str, Any]) -> None:
    # Request headers carry the bearer token and the subscription key.
    _, diagnostics = bicep.one(templates, "Microsoft.ApiManagement/service/diagnostics")
    props = diagnostics["properties"]
    assert "frontend" not in props and "backend" not in props
    assert props["httpCorrelationProtocol"] == "W3C"


# ---- Key Vault and the subscription key ---------------------------------------------------------


def test_key_vault_uses_rbac_and_soft_delete(templates: dict[str, Any]) -> None:
    _, vault = bicep.one(templates, "Microsoft.KeyVault/vaults")
    props = vault["properties"]
    assert props["enableRbacAuthorization"] is True
    assert "accessPolicies" not in props
    assert props["enableSoftDelete"] is True


def test_subscription_key_goes_from_apim_straight_into_key_vault(templates: dict[str, Any]) -> None:
    _, secret = bicep.one(templates, "Microsoft.KeyVault/vaults/secrets")
    value = secret["properties"]["value"]
    assert value["operator"]["operands"]["operand_2"] == "primaryKey"
    assert value["operator"]["operands"]["operand_1"]["operator"]["operands"]["func_name"] == "listSecrets"


def test_subscription_key_setting_is_a_key_vault_reference(function_app: dict[str, Any],
                                                           app_settings: dict[str, Any]) -> None:
    assert app_settings["APIM_SUBSCRIPTION_KEY"] == "@Microsoft.KeyVault(SecretUri=${subscriptionKeyItemUri})"
    # Resolved with the host identity, not a (non-existent) system-assigned one.
    assert bicep.accessor(function_app["properties"]["keyVaultReferenceIdentity"]) == ["hostIdentity", "id"]


# ---- role assignments ---------------------------------------------------------------------------


def _role_assignments(templates: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    found = []
    for file, symbol, assignment in bicep.resources(templates, "Microsoft.Authorization/roleAssignments"):
        (call,) = bicep.functions(assignment["properties"]["roleDefinitionId"], "subscription_resource_id")
        role_id = bicep.resolve(templates[file], call["resource_name_1"])
        found.append((file, symbol, role_id, assignment))
    return found


def test_only_known_roles_are_assigned(templates: dict[str, Any]) -> None:
    assignments = _role_assignments(templates)
    assert {role for _, _, role, _ in assignments} == set(KNOWN_ROLES)
    for file, symbol, role, assignment in assignments:
        assert bicep.GUID.match(role), f"{file}: {symbol} role {role}"
        expected = "developerPrincipalType" if symbol.startswith("developer") else "ServicePrincipal"
        assert assignment["properties"]["principalType"] == expected, f"{file}: {symbol}"


def test_every_role_assignment_is_commented(templates: dict[str, Any]) -> None:
    for file, symbol, role, _ in _role_assignments(templates):
        lines = bicep.source_lines(file)
        start = next(i for i, line in enumerate(lines) if line.startswith(f"resource {symbol} "))
        comment = []
        for line in reversed(lines[:start]):
            if not line.startswith("//"):
                break
            comment.append(line)
        assert comment, f"{file}: role assignment {symbol} has no comment saying who needs it"
        # Each role ID appears with its role name next to it.
        name = KNOWN_ROLES[role]
        assert any(role in line and name in line for line in lines), f"{file}: {role} without '{name}'"


def test_role_scopes_are_the_narrowest(templates: dict[str, Any]) -> None:
    scopes = {(file, symbol): assignment["scope"] for file, symbol, _, assignment in _role_assignments(templates)}
    assert scopes == {
        ("modules/rbac.bicep", "hostStorage"): "storage",
        ("modules/rbac.bicep", "hostTelemetry"): "appInsights",
        ("modules/rbac.bicep", "hostSecret"): "secret",  # one secret, not the whole vault
        ("modules/rbac.bicep", "developerSecret"): "secret",
        ("modules/rbac.bicep", "developerTelemetry"): "appInsights",
        ("modules/apim.bicep", "apimCanPublishTelemetry"): "appInsights",
    }


# ---- Entra ID app registration and app roles --------------------------------------------------


def _in_file(templates: dict[str, Any], file: str, type_: str) -> dict[str, Any]:
    [found] = [body for f, _, body in bicep.resources(templates, type_) if f == file]
    return found


def test_only_the_two_app_registrations_of_the_template(templates: dict[str, Any]) -> None:
    files = sorted(f for f, _, _ in bicep.resources(templates, "Microsoft.Graph/applications"))
    assert files == ["modules/entra-api.bicep", "modules/entra-sample-backend.bicep"]


def test_api_app_registration(templates: dict[str, Any]) -> None:
    app = _in_file(templates, "modules/entra-api.bicep", "Microsoft.Graph/applications")
    assert app["identifierUris"] == ["identifierUri"]
    assert app["signInAudience"] == "AzureADMyOrg"
    assert app["api"]["requestedAccessTokenVersion"] == 2
    roles = {role["value"]: role for role in app["appRoles"]}
    assert set(roles) == {"readRole", "writeRole"}
    for role in roles.values():
        # Managed identities, and a developer at a laptop when assigned (principalId).
        assert role["allowedMemberTypes"] == ["Application", "User"]
        assert role["isEnabled"] is True
    # A signed-in developer gets a token through the Azure CLI without a consent prompt.
    (scope,) = app["api"]["oauth2PermissionScopes"]
    assert scope["id"] == "developerScopeId" and scope["isEnabled"] is True
    (client,) = app["api"]["preAuthorizedApplications"]
    assert client == {"appId": "azureCliClientId", "delegatedPermissionIds": ["developerScopeId"]}
    principal = _in_file(templates, "modules/entra-api.bicep", "Microsoft.Graph/servicePrincipals")
    assert principal["appRoleAssignmentRequired"] is True


def test_app_id_uri_is_a_secure_pattern_and_unique_per_environment(main: dict[str, Any]) -> None:
    # api://<tenant ID>/<string>: one of Entra ID's secure identifier URI patterns, which tenants
    # enforcing the default app management policy require (api://<string> alone is refused).
    assert bicep.variable(main, "apiAppIdUri") == "api://${tenant().tenantId}/${apiUniqueName}"
    assert bicep.variable(main, "apiUniqueName") == "orders-api-${resourceToken}"
    assert bicep.variable(main, "sampleBackendAppIdUri") == "api://${tenant().tenantId}/${sampleBackendUniqueName}"
    assert bicep.variable(main, "sampleBackendUniqueName") == "orders-sample-backend-${resourceToken}"


def test_service_management_reference_is_optional_and_reaches_the_app_registration(
        main: dict[str, Any], templates: dict[str, Any]) -> None:
    assert main["parameters"]["serviceManagementReference"]["default"] == ""
    for module, file in (("entraApi", "entra-api"), ("entraSampleBackend", "entra-sample-backend")):
        config = main["modules"][module]["config"]
        params = config.get("config", config)["params"]  # a conditional module nests its body
        assert params["serviceManagementReference"] == "serviceManagementReference"
        app = _in_file(templates, f"modules/{file}.bicep", "Microsoft.Graph/applications")
        # Not set at all when empty (an empty string is not a valid reference).
        assert app["serviceManagementReference"] == {"operator": {"type": "conditional", "operands": {
            "condition": {"function": {"type": "empty", "parameters": {"item_to_test": "serviceManagementReference"}}},
            "true_value": None, "false_value": "serviceManagementReference"}}}


def test_each_caller_identity_gets_exactly_its_app_role(templates: dict[str, Any]) -> None:
    assignments = {symbol: body for _, symbol, body in bicep.resources(templates, "Microsoft.Graph/appRoleAssignedTo")}
    assert set(assignments) == {"readerCanRead", "writerCanWrite", "developerCanRead", "developerCanWrite"}
    assert assignments["readerCanRead"]["appRoleId"] == "readRoleId"
    assert assignments["readerCanRead"]["principalId"] == "readerPrincipalId"
    assert assignments["writerCanWrite"]["appRoleId"] == "writeRoleId"
    # The writer identity, or the reader when there is no separate writer.
    assert "writerPrincipalId" in str(assignments["writerCanWrite"]["principalId"])


def test_the_developer_gets_laptop_rights_only_when_named(templates: dict[str, Any], main: dict[str, Any]) -> None:
    assert main["parameters"]["principalId"]["default"] == ""
    for file in ("modules/entra-role-assignments.bicep", "modules/rbac.bicep"):
        developer = {symbol: resource for symbol, resource in templates[file]["resources"].items()
                     if symbol.startswith("developer")}
        assert developer, file
        for symbol, resource in developer.items():
            condition = resource["config"]["condition"]
            assert bicep.functions(condition, "empty") == [{"item_to_test": "developerPrincipalId"}], symbol
    graph = {symbol: body for _, symbol, body in bicep.resources(templates, "Microsoft.Graph/appRoleAssignedTo")}
    assert graph["developerCanRead"]["appRoleId"] == "readRoleId"
    assert graph["developerCanWrite"]["appRoleId"] == "writeRoleId"
    for symbol in ("developerCanRead", "developerCanWrite"):
        assert graph[symbol]["principalId"] == "developerPrincipalId"


# ---- outputs ------------------------------------------------------------------------------------

SECRET_NAME = re.compile(r"SECRET|PASSWORD|CONNECTION_?STRING|SUBSCRIPTION_?KEY|ACCESS_?KEY|TOKEN", re.IGNORECASE)


def _calls_list_function(node: Any) -> bool:
    """listSecrets(), listKeys(), ...: the ARM actions that return credentials."""
    return any(isinstance(n, dict) and n.get("operator", {}).get("type") == "function_accessor"
               and str(n["operator"]["operands"].get("func_name", "")).startswith("list")
               for n in bicep.walk(node))


# Names the Bicep linter (secure-secrets-in-params, outputs-should-not-contain-secrets; errors in
# bicepconfig.json) takes for secrets.
LINTER_SECRET_WORDS = re.compile(r"password|pwd|secret|accountkey|acctkey", re.IGNORECASE)


def test_no_plain_parameter_or_output_is_named_like_a_secret(templates: dict[str, Any]) -> None:
    for file, template in templates.items():
        for name, param in template.get("parameters", {}).items():
            secure = any(d["type"] == "secure" for d in param["decorators"])
            assert secure or not LINTER_SECRET_WORDS.search(name), f"{file}: param {name}"
        for name in template.get("outputs", {}):
            assert not LINTER_SECRET_WORDS.search(name), f"{file}: output {name}"


def test_outputs_are_what_a_user_needs_and_nothing_secret(main: dict[str, Any]) -> None:
    outputs = main["outputs"]
    for needed in ("AZURE_FUNCTION_APP_NAME", "APIM_GATEWAY_URL", "APIM_BASE_URL", "API_APP_ID_URI"):
        assert needed in outputs
    for name, output in outputs.items():
        assert not SECRET_NAME.search(name), name
        assert not any(d["type"] == "secure" for d in output["decorators"]), name


def test_no_output_anywhere_carries_a_key_or_connection_string(templates: dict[str, Any]) -> None:
    # The key goes from APIM to Key Vault (or the Logic App) inside one module: never an output,
    # so it is never in a deployment's outputs or azd's .env.
    for file, template in templates.items():
        for name, output in template.get("outputs", {}).items():
            assert "ConnectionString" not in str(output), f"{file}: {name}"
            assert not _calls_list_function(output), f"{file}: {name}"
