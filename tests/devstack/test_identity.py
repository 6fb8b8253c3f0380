"""The identity stand-in, driven by the real clients: azure-identity (sync and aio) and msal.

Every test selects a managed-identity source the way Azure does, through environment
variables: App Service / Functions (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`) or IMDS
(`AZURE_POD_IDENTITY_AUTHORITY_HOST`). Tokens are verified with PyJWT against the key
published through the OpenID discovery document, as an API (or APIM) would.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import jwt
import msal
import pytest
import requests
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
from azure.core.pipeline.transport import RequestsTransport
from azure.identity import CredentialUnavailableError, ManagedIdentityCredential
from azure.identity.aio import ManagedIdentityCredential as AsyncManagedIdentityCredential

from devstack import DevStack
from devstack.config import load_config

RESOURCE = "api://contoso-orders"
SCOPE = f"{RESOURCE}/.default"
LIFETIME = 86400  # token_lifetime_seconds in devstack/config.json: Azure's 24 hours from minting
BACKDATE = 300  # token_backdate_seconds: iat and nbf five minutes in the past, as Entra sets them
MODES = ("app_service", "imds")
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"
APP_SERVICE_UNKNOWN_IDENTITY = (
    "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId."
)
# Azure's text per source when the requested identity is not assigned to the app.
UNKNOWN_IDENTITY_TEXT = {"app_service": APP_SERVICE_UNKNOWN_IDENTITY, "imds": "Identity not found"}
# Every variable azure-identity and msal read to choose a managed-identity source.
SOURCE_VARIABLES = (
    "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT", "IMDS_ENDPOINT", "MSI_ENDPOINT",
    "MSI_SECRET", "AZURE_POD_IDENTITY_AUTHORITY_HOST", "AZURE_FEDERATED_TOKEN_FILE", "AZUREPS_HOST_ENVIRONMENT",
)
# Keeps client retries instant: Retry-After 0 and no backoff.
NO_RETRIES = {"retry_total": 0}


# --- helpers -----------------------------------------------------------------------------

def use_source(monkeypatch: pytest.MonkeyPatch, endpoints: dict[str, Any], mode: str) -> None:
    """Point the clients at the stand-in as App Service or as IMDS, nothing else set."""
    for name in SOURCE_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    if mode == "app_service":
        monkeypatch.setenv("IDENTITY_ENDPOINT", endpoints["identity_endpoint"])
        monkeypatch.setenv("IDENTITY_HEADER", endpoints["identity_header"])
    else:
        monkeypatch.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", endpoints["imds_endpoint"])


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, endpoints: dict[str, Any]) -> str:
    use_source(monkeypatch, endpoints, request.param)
    return request.param


def verified_claims(token: str, openid_config_url: str, audience: str) -> dict[str, Any]:
    """Validate the token the way an API does: discovery document -> JWKS -> signature, iss, aud, exp."""
    config = requests.get(openid_config_url, timeout=5).json()
    signing_key = jwt.PyJWKClient(config["jwks_uri"]).get_signing_key_from_jwt(token)
    return jwt.decode(token, signing_key.key, algorithms=config["id_token_signing_alg_values_supported"],
                      audience=audience, issuer=config["issuer"])


def assert_v2_app_token(claims: dict[str, Any], identity: dict[str, Any], endpoints: dict[str, Any]) -> None:
    tenant = endpoints["tenant_id"]
    assert claims["aud"] == endpoints["api_client_id"]  # v2: the API's client ID, not its URI
    assert claims["iss"] == f"https://login.microsoftonline.com/{tenant}/v2.0"
    assert claims["tid"] == tenant
    assert claims["oid"] == claims["sub"] == identity["principal_id"]
    assert claims["azp"] == identity["client_id"]
    assert claims["azpacr"] == "2"
    assert "idtyp" not in claims  # optional, and infra/'s app registration does not ask for it
    assert claims["ver"] == "2.0"
    assert claims.get("roles", []) == [r for r in identity["roles"] if r in endpoints["api_roles"].values()]
    assert claims["exp"] - claims["iat"] == LIFETIME + BACKDATE
    assert "appid" not in claims


def stats(control: Any) -> dict[str, Any]:
    return control.stats().get("identity", {})


def app_service_get(endpoints: dict[str, Any], header: str | None = "", **params: str) -> requests.Response:
    """A raw App Service token request; header "" means the right one, None means none."""
    headers = {} if header is None else {"X-IDENTITY-HEADER": header or endpoints["identity_header"]}
    query = {"api-version": "2019-08-01", "resource": RESOURCE, **params}
    return requests.get(endpoints["identity_endpoint"], params=query, headers=headers, timeout=5)


def imds_get(endpoints: dict[str, Any], metadata: str | None = "true", **params: str) -> requests.Response:
    headers = {} if metadata is None else {"Metadata": metadata}
    query = {"api-version": "2018-02-01", "resource": RESOURCE, **params}
    url = endpoints["imds_endpoint"] + "/metadata/identity/oauth2/token"
    return requests.get(url, params=query, headers=headers, timeout=5)


# --- the real clients get verifiable tokens ------------------------------------------------

def test_azure_identity_sync_gets_a_v2_token(mode: str, endpoints: dict[str, Any], control: Any) -> None:
    reader = endpoints["identities"]["reader"]
    with ManagedIdentityCredential(client_id=reader["client_id"]) as credential:
        token = credential.get_token(SCOPE)

    claims = verified_claims(token.token, endpoints["openid_config_url"], endpoints["api_client_id"])
    assert_v2_app_token(claims, reader, endpoints)
    assert abs(token.expires_on - claims["exp"]) <= 1
    counters = stats(control)
    assert counters["token_requests"] == 1
    assert counters["by_endpoint"] == {mode: 1}
    assert counters["by_client_id"] == {reader["client_id"]: 1}


async def test_azure_identity_aio_gets_a_v2_token(mode: str, endpoints: dict[str, Any]) -> None:
    writer = endpoints["identities"]["writer"]
    async with AsyncManagedIdentityCredential(client_id=writer["client_id"]) as credential:
        token = await credential.get_token(SCOPE)

    claims = await asyncio.to_thread(verified_claims, token.token, endpoints["openid_config_url"],
                                     endpoints["api_client_id"])
    assert_v2_app_token(claims, writer, endpoints)


def test_msal_managed_identity_client_gets_a_v2_token(mode: str, endpoints: dict[str, Any], control: Any) -> None:
    reader = endpoints["identities"]["reader"]
    client = msal.ManagedIdentityClient(msal.UserAssignedManagedIdentity(client_id=reader["client_id"]),
                                        http_client=requests.Session())
    result = client.acquire_token_for_client(resource=RESOURCE)

    assert "error" not in result, result.get("error_description")
    assert result["token_type"] == "Bearer"
    assert LIFETIME - 5 <= result["expires_in"] <= LIFETIME
    claims = verified_claims(result["access_token"], endpoints["openid_config_url"], endpoints["api_client_id"])
    assert_v2_app_token(claims, reader, endpoints)


def test_no_id_means_the_system_assigned_identity(mode: str, endpoints: dict[str, Any]) -> None:
    system = endpoints["identities"]["system"]
    with ManagedIdentityCredential() as credential:
        # Not the API: it requires an app role, and the system identity holds none.
        token = credential.get_token("https://management.azure.com/.default")

    claims = jwt.decode(token.token, options={"verify_signature": False})
    assert claims["oid"] == system["principal_id"] and "roles" not in claims


def test_an_identity_without_an_app_role_gets_no_token_for_the_api(endpoints: dict[str, Any]) -> None:
    # The API's service principal requires assignment (appRoleAssignmentRequired, as infra/ sets it).
    unassigned = endpoints["identities"]["unassigned"]["client_id"]
    app_service = app_service_get(endpoints, resource=RESOURCE, client_id=unassigned)
    assert app_service.status_code == 500  # App Service hides Entra's reason, as it does for any refusal
    assert app_service.json()["message"] == "An unexpected error occured while fetching the AAD Token."

    imds = imds_get(endpoints, resource=RESOURCE, client_id=unassigned)
    assert imds.status_code == 400  # IMDS passes Entra's answer through
    assert imds.json()["error_codes"] == [501051]
    assert imds.json()["error_description"].startswith(f"AADSTS501051: Application '{unassigned}' is not assigned")

    other = app_service_get(endpoints, resource="https://management.azure.com", client_id=unassigned)
    assert other.status_code == 200  # only the API requires a role


@pytest.mark.parametrize("selector", ["object_id", "resource_id"])
def test_user_assigned_identity_by_object_or_resource_id(mode: str, selector: str, endpoints: dict[str, Any]) -> None:
    writer = endpoints["identities"]["writer"]
    value = writer["principal_id"] if selector == "object_id" else writer["resource_id"]
    # msal sends object_id, and the resource ID as mi_res_id (App Service) or msi_res_id (IMDS).
    with ManagedIdentityCredential(identity_config={selector: value}) as credential:
        token = credential.get_token(SCOPE)

    claims = verified_claims(token.token, endpoints["openid_config_url"], endpoints["api_client_id"])
    assert_v2_app_token(claims, writer, endpoints)


# --- the wire format -----------------------------------------------------------------------

@pytest.mark.parametrize("param", ["client_id", "principal_id", "object_id", "mi_res_id"])
def test_app_service_response_fields(param: str, endpoints: dict[str, Any], control: Any) -> None:
    writer = endpoints["identities"]["writer"]
    value = {"client_id": writer["client_id"], "mi_res_id": writer["resource_id"]}.get(param, writer["principal_id"])

    response = app_service_get(endpoints, **{param: value})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}  # no not_before
    assert body["expires_on"].isdigit()  # epoch seconds, as a string
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert int(body["expires_on"]) == claims["exp"] == claims["nbf"] + LIFETIME + BACKDATE
    assert response.headers["X-CORRELATION-ID"]
    assert body["resource"] == RESOURCE
    assert body["token_type"] == "Bearer"
    assert body["client_id"] == writer["client_id"]


@pytest.mark.parametrize("param", ["client_id", "object_id", "mi_res_id", "msi_res_id"])
def test_imds_response_fields(param: str, endpoints: dict[str, Any], control: Any) -> None:
    writer = endpoints["identities"]["writer"]
    value = {"client_id": writer["client_id"], "object_id": writer["principal_id"]}.get(param, writer["resource_id"])

    response = imds_get(endpoints, **{param: value})

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before",
                         "resource", "token_type"}
    assert all(isinstance(v, str) for v in body.values())  # IMDS sends every value as a string
    assert LIFETIME - 5 <= int(body["expires_in"]) <= LIFETIME
    assert body["ext_expires_in"] == str(LIFETIME)
    assert int(body["not_before"]) == int(body["expires_on"]) - LIFETIME - BACKDATE
    assert body["client_id"] == writer["client_id"]


@pytest.mark.parametrize("resource", ["api://contoso-orders/", "5f1c2e3d-4b5a-4c6d-8e7f-9a0b1c2d3e4f",
                                      "https://management.azure.com/", "https://vault.azure.net"])
def test_resource_variants_are_accepted_and_echoed(resource: str, endpoints: dict[str, Any]) -> None:
    response = app_service_get(endpoints, resource=resource, client_id=endpoints["identities"]["reader"]["client_id"])

    assert response.status_code == 200
    assert response.json()["resource"] == resource


# --- refusals, in each endpoint's own words --------------------------------------------------

@pytest.mark.parametrize("header", [None, "not-the-header"])
def test_app_service_refuses_a_missing_or_wrong_identity_header(header: str | None, endpoints: dict[str, Any],
                                                                control: Any) -> None:
    response = app_service_get(endpoints, header=header)

    assert response.status_code == 401
    body = response.json()
    assert body["statusCode"] == 401 and "X-IDENTITY-HEADER" in body["message"]
    assert stats(control)["token_requests"] == 1  # refused requests are counted too
    assert "tokens_issued" not in stats(control)


def test_wrong_identity_header_fails_azure_identity(monkeypatch: pytest.MonkeyPatch, endpoints: dict[str, Any]) -> None:
    use_source(monkeypatch, endpoints, "app_service")
    monkeypatch.setenv("IDENTITY_HEADER", "rotated-away")

    with ManagedIdentityCredential() as credential, pytest.raises(CredentialUnavailableError, match="401"):
        credential.get_token(SCOPE)


@pytest.mark.parametrize("metadata", [None, "True"])
def test_imds_requires_metadata_true(metadata: str | None, endpoints: dict[str, Any]) -> None:
    # azure-identity's availability probe omits the header and relies on exactly this 400.
    response = imds_get(endpoints, metadata=metadata)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_request",
                               "error_description": "Required metadata header not specified"}


def test_unsupported_api_versions_are_refused(endpoints: dict[str, Any]) -> None:
    old = app_service_get(endpoints, **{"api-version": "2017-09-01"})
    assert old.status_code == 400
    assert old.json()["error"]["code"] == "UnsupportedApiVersion"
    assert "'2017-09-01'" in old.json()["error"]["message"]

    imds = imds_get(endpoints, **{"api-version": "2017-09-01"})
    assert imds.status_code == 400
    assert imds.json()["error"] == "invalid_request"


def test_unknown_identity_gets_azures_400_bodies(endpoints: dict[str, Any]) -> None:
    app_service = app_service_get(endpoints, client_id=UNKNOWN_ID)
    assert app_service.status_code == 400
    assert app_service.json() == {"statusCode": 400, "message": APP_SERVICE_UNKNOWN_IDENTITY}

    imds = imds_get(endpoints, client_id=UNKNOWN_ID)
    assert imds.status_code == 400
    assert imds.json() == {"error": "invalid_request", "error_description": "Identity not found"}


def test_unknown_identity_error_carries_azures_text_sync(mode: str) -> None:
    with ManagedIdentityCredential(client_id=UNKNOWN_ID) as credential, \
            pytest.raises(CredentialUnavailableError) as raised:
        credential.get_token(SCOPE)
    assert UNKNOWN_IDENTITY_TEXT[mode] in str(raised.value)


async def test_unknown_identity_error_carries_azures_text_aio(mode: str) -> None:
    # aio raises ClientAuthenticationError for App Service and its subclass
    # CredentialUnavailableError for IMDS.
    async with AsyncManagedIdentityCredential(client_id=UNKNOWN_ID) as credential:
        with pytest.raises(ClientAuthenticationError) as raised:
            await credential.get_token(SCOPE)
    assert UNKNOWN_IDENTITY_TEXT[mode] in str(raised.value)


def test_unknown_resource_is_entras_aadsts500011(endpoints: dict[str, Any]) -> None:
    app_service = app_service_get(endpoints, resource="api://not-registered")
    assert app_service.status_code == 500  # App Service's vague answer for any refusal by Entra
    assert app_service.json()["message"] == "An unexpected error occured while fetching the AAD Token."

    imds = imds_get(endpoints, resource="api://not-registered")
    assert imds.status_code == 400
    body = imds.json()
    assert body["error"] == "invalid_resource"
    assert body["error_codes"] == [500011]
    assert body["error_description"].startswith("AADSTS500011: The resource principal named api://not-registered")


def test_unknown_resource_fails_azure_identity(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(RequestsTransport, "sleep", lambda self, duration: None)  # App Service's 500 is retried
    expected = "AADSTS500011" if mode == "imds" else "unexpected error occured while fetching the AAD Token"
    with ManagedIdentityCredential() as credential, pytest.raises(ClientAuthenticationError, match=expected):
        credential.get_token("api://not-registered/.default")


def test_missing_resource_is_refused(endpoints: dict[str, Any]) -> None:
    assert app_service_get(endpoints, resource="").status_code == 400
    imds = imds_get(endpoints, resource="")
    assert imds.status_code == 400
    assert imds.json()["error_description"] == "Required audience parameter not specified"


def test_two_identity_selectors_are_refused(endpoints: dict[str, Any]) -> None:
    writer = endpoints["identities"]["writer"]
    response = app_service_get(endpoints, client_id=writer["client_id"], principal_id=writer["principal_id"])
    assert response.status_code == 400


# --- an API that accepts v1 tokens, an app with no system-assigned identity ------------------

@pytest.fixture(scope="module")
def v1_stack() -> Iterator[DevStack]:
    """A second stack: the API accepts v1 tokens and the app has no system-assigned identity."""
    base = load_config()
    config = replace(base, api=replace(base.api, accepted_token_version=1),
                     identities={name: i for name, i in base.identities.items() if not i.system_assigned})
    with DevStack(config=config) as stack:
        yield stack


def test_v1_token_shape(v1_stack: DevStack, monkeypatch: pytest.MonkeyPatch) -> None:
    endpoints = v1_stack.endpoints
    reader = endpoints["identities"]["reader"]
    use_source(monkeypatch, endpoints, "app_service")
    with ManagedIdentityCredential(client_id=reader["client_id"]) as credential:
        token = credential.get_token(SCOPE)

    claims = verified_claims(token.token, endpoints["openid_config_url_v1"], audience=RESOURCE)
    tenant = endpoints["tenant_id"]
    assert claims["aud"] == RESOURCE  # v1: the Application ID URI
    assert claims["iss"] == f"https://sts.windows.net/{tenant}/"
    assert claims["appid"] == reader["client_id"]
    assert claims["appidacr"] == "2"
    assert claims["ver"] == "1.0"
    assert claims["roles"] == [r for r in reader["roles"] if r in endpoints["api_roles"].values()]
    assert "idtyp" not in claims
    assert "azp" not in claims
    assert jwt.get_unverified_header(token.token)["x5t"] == jwt.get_unverified_header(token.token)["kid"]


def test_no_system_assigned_identity(v1_stack: DevStack) -> None:
    endpoints = v1_stack.endpoints
    app_service = app_service_get(endpoints)
    assert app_service.status_code == 400
    assert app_service.json()["message"] == "Unable to load the proper Managed Identity."

    imds = imds_get(endpoints)
    assert imds.status_code == 400
    assert imds.json() == {"error": "invalid_request", "error_description": "Identity not found"}


# --- OpenID discovery --------------------------------------------------------------------------

def test_openid_configuration_v2(endpoints: dict[str, Any]) -> None:
    response = requests.get(endpoints["openid_config_url"], timeout=5)

    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "max-age=86400, private"
    config = response.json()
    tenant, base = endpoints["tenant_id"], endpoints["imds_endpoint"]
    assert config["issuer"] == f"https://login.microsoftonline.com/{tenant}/v2.0"
    assert config["jwks_uri"] == endpoints["jwks_uri"] == f"{base}/{tenant}/discovery/v2.0/keys"
    assert config["token_endpoint"] == f"{base}/{tenant}/oauth2/v2.0/token"
    assert config["authorization_endpoint"] == f"{base}/{tenant}/oauth2/v2.0/authorize"
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    keys = requests.get(config["jwks_uri"], timeout=5).json()["keys"]
    assert [k["kty"] for k in keys] == ["RSA", "RSA"] and {k["issuer"] for k in keys} == {config["issuer"]}


def test_openid_configuration_v1(endpoints: dict[str, Any]) -> None:
    config = requests.get(endpoints["openid_config_url_v1"], timeout=5).json()

    tenant, base = endpoints["tenant_id"], endpoints["imds_endpoint"]
    assert config["issuer"] == f"https://sts.windows.net/{tenant}/"
    assert config["jwks_uri"] == f"{base}/{tenant}/discovery/keys"
    assert config["token_endpoint"] == f"{base}/{tenant}/oauth2/token"
    keys = requests.get(config["jwks_uri"], timeout=5).json()["keys"]
    assert len(keys) == 2 and not any("issuer" in k for k in keys)  # Entra's v1 key set names no issuer


@pytest.mark.parametrize("alias", ["common", "organizations"])
def test_multi_tenant_discovery_uses_the_tenantid_placeholder(alias: str, endpoints: dict[str, Any]) -> None:
    base = endpoints["imds_endpoint"]
    v2 = requests.get(f"{base}/{alias}/v2.0/.well-known/openid-configuration", timeout=5).json()
    v1 = requests.get(f"{base}/{alias}/.well-known/openid-configuration", timeout=5).json()

    assert v2["issuer"] == "https://login.microsoftonline.com/{tenantid}/v2.0"
    assert v1["issuer"] == "https://sts.windows.net/{tenantid}/"
    assert v2["jwks_uri"] == f"{base}/{alias}/discovery/v2.0/keys"


def test_unknown_tenant_is_entras_aadsts90002(endpoints: dict[str, Any]) -> None:
    url = f"{endpoints['imds_endpoint']}/{UNKNOWN_ID}/v2.0/.well-known/openid-configuration"
    response = requests.get(url, timeout=5)

    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_tenant"
    assert body["error_codes"] == [90002]
    assert body["error_description"].startswith(f"AADSTS90002: Tenant '{UNKNOWN_ID}' not found.")


# --- faults and counters -------------------------------------------------------------------------

def test_503_with_retry_after_is_retried_sync(mode: str, endpoints: dict[str, Any], control: Any) -> None:
    control.fault("identity", status=503, retry_after=0)
    with ManagedIdentityCredential(client_id=endpoints["identities"]["reader"]["client_id"]) as credential:
        assert credential.get_token(SCOPE).token

    assert stats(control)["token_requests"] == 2
    assert stats(control)["tokens_issued"] == 1


async def test_503_with_retry_after_is_retried_aio(mode: str, endpoints: dict[str, Any], control: Any) -> None:
    await asyncio.to_thread(control.fault, "identity", status=503, retry_after=0)
    async with AsyncManagedIdentityCredential(client_id=endpoints["identities"]["reader"]["client_id"]) as cred:
        assert (await cred.get_token(SCOPE)).token

    assert (await asyncio.to_thread(stats, control))["token_requests"] == 2


@pytest.mark.parametrize("fault", [{"malformed_body": True}, {"drop_connection": True}])
def test_malformed_or_dropped_responses_are_errors(mode: str, fault: dict[str, Any], control: Any) -> None:
    control.fault("identity", **fault)
    with ManagedIdentityCredential(**NO_RETRIES) as credential, pytest.raises(HttpResponseError):
        credential.get_token(SCOPE)

    assert stats(control)["token_requests"] == 1


def test_faulted_responses_use_the_endpoints_error_shape(endpoints: dict[str, Any], control: Any) -> None:
    control.fault("identity", status=500, retry_after=7, times=2)

    app_service = app_service_get(endpoints)
    assert app_service.status_code == 500
    assert app_service.headers["Retry-After"] == "7"
    assert set(app_service.json()) == {"statusCode", "message", "correlationId"}

    imds = imds_get(endpoints)
    assert imds.status_code == 500
    assert imds.json()["error"] == "server_error"


def test_identity_faults_are_kept_for_token_requests(endpoints: dict[str, Any], control: Any) -> None:
    # Discovery and JWKS (what APIM reads) never take a fault meant for the token call.
    control.fault("identity", status=503)
    assert requests.get(endpoints["openid_config_url"], timeout=5).status_code == 200
    assert requests.get(endpoints["jwks_uri"], timeout=5).status_code == 200

    reader = endpoints["identities"]["reader"]["client_id"]
    assert app_service_get(endpoints, client_id=reader).status_code == 503
    assert app_service_get(endpoints, client_id=reader).status_code == 200
    assert stats(control)["jwks_requests"] == 1


def test_token_and_identity_header_are_never_logged(caplog: pytest.LogCaptureFixture,
                                                    endpoints: dict[str, Any]) -> None:
    caplog.set_level(logging.DEBUG, logger="devstack")
    good = app_service_get(endpoints, client_id=endpoints["identities"]["reader"]["client_id"])
    app_service_get(endpoints, header="a-wrong-header-value")

    devstack_log = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("devstack"))
    assert "token served" in devstack_log or "token minted and served" in devstack_log
    for secret in (good.json()["access_token"], endpoints["identity_header"], "a-wrong-header-value"):
        assert secret not in devstack_log
