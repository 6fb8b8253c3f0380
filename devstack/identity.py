"""Managed-identity token endpoints and Entra-style OpenID discovery.

One loopback service speaks three protocols, so the real azure-identity and msal
clients get tokens from it unchanged:

- App Service / Functions: `GET /msi/token` (`IDENTITY_ENDPOINT`), secret header
  `X-IDENTITY-HEADER` (`IDENTITY_HEADER`), api-version 2019-08-01.
- IMDS: `GET /metadata/identity/oauth2/token` with `Metadata: true`, api-version
  2018-02-01; clients reach it through `AZURE_POD_IDENTITY_AUTHORITY_HOST`.
- Entra discovery: v2 and v1 `.well-known/openid-configuration` documents and
  their JWKS, so token validators (APIM's validate-jwt, PyJWT) find the key.

Each endpoint refuses requests with its own error body, because that is what
the clients parse and show: App Service `{"statusCode", "message"}`, IMDS
`{"error", "error_description"}`, Entra `{"error", "error_description",
"error_codes", ...}`. Token values and the identity header are never logged.
"""

from __future__ import annotations

import logging
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum, auto
from http import HTTPStatus
from typing import Any

from aiohttp import web

from devstack.config import Identity, StackConfig
from devstack.faults import fault_middleware
from devstack.state import StackState
from devstack.tokens import v1_issuer, v2_issuer

STATE = web.AppKey("state", StackState)
SERVICE = "identity"

APP_SERVICE_PATH = "/msi/token"
IMDS_PATH = "/metadata/identity/oauth2/token"
TOKEN_ENDPOINTS = {APP_SERVICE_PATH: "app_service", IMDS_PATH: "imds"}
# The versions azure-identity and msal send (azure/identity/_credentials/app_service.py,
# imds.py; msal/managed_identity.py). Older App Service 2017-09-01 uses another header
# and a date-string expires_on, so it is refused rather than half-supported.
APP_SERVICE_API_VERSIONS = frozenset({"2019-08-01"})
IMDS_API_VERSIONS = frozenset({"2018-02-01"})

# Query parameter that selects a user-assigned identity -> StackConfig.find_identity keyword.
# App Service documents client_id, principal_id (alias object_id) and mi_res_id;
# IMDS documents client_id, object_id and mi_res_id, and msal sends msi_res_id to IMDS.
APP_SERVICE_ID_PARAMS = {"client_id": "client_id", "principal_id": "principal_id",
                         "object_id": "principal_id", "mi_res_id": "resource_id"}
IMDS_ID_PARAMS = {"client_id": "client_id", "object_id": "principal_id",
                  "mi_res_id": "resource_id", "msi_res_id": "resource_id"}

ENTRA_ERROR_URI = "https://login.microsoftonline.com/error?code={code}"
# Entra answers /common and /organizations with this literal placeholder in `issuer`.
MULTI_TENANT_ALIASES = ("common", "organizations")
TENANT_PLACEHOLDER = "{tenantid}"
# Entra serves discovery documents and keys with this header.
DISCOVERY_CACHE_CONTROL = "max-age=86400, private"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_log = logging.getLogger(__name__)


# --- why a token request is refused ------------------------------------------------------

class Reason(Enum):
    """Why a well-formed, authorised token request gets no token."""

    MISSING_RESOURCE = auto()
    AMBIGUOUS_IDENTITY = auto()
    UNKNOWN_IDENTITY = auto()
    NO_SYSTEM_IDENTITY = auto()
    UNKNOWN_RESOURCE = auto()
    NOT_ASSIGNED = auto()  # the API requires an app role assignment and the identity has none


class Refusal(Exception):
    """A token request the endpoint refuses; each endpoint words it its own way."""

    def __init__(self, reason: Reason, resource: str = "", client_id: str = "") -> None:
        super().__init__(reason.name)
        self.client_id = client_id
        self.reason = reason
        self.resource = resource


def _resource_not_found(resource: str, tenant_id: str) -> str:
    """Entra's AADSTS500011 text for a resource with no service principal in the tenant."""
    return (f"AADSTS500011: The resource principal named {resource} was not found in the tenant named "
            f"{tenant_id}. This can happen if the application has not been installed by the administrator "
            "of the tenant or consented to by any user in the tenant. You might have sent your authentication "
            "request to the wrong tenant.")


def _not_assigned(identity_client_id: str, config: StackConfig) -> str:
    """Entra's AADSTS501051 text: the API requires an app role and the client has none."""
    return (f"AADSTS501051: Application '{identity_client_id}' is not assigned to a role for the application "
            f"'{config.api.app_id_uri}'({config.api.display_name}).")


def _entra_error(status: int, error: str, code: int, text: str) -> web.Response:
    """An error body as login.microsoftonline.com sends it, trace and correlation IDs included."""
    trace_id, correlation_id = str(uuid.uuid4()), str(uuid.uuid4())
    timestamp = time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())
    return web.json_response({
        "error": error,
        "error_description": f"{text} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}",
        "error_codes": [code],
        "timestamp": timestamp,
        "trace_id": trace_id,
        "correlation_id": correlation_id,
        "error_uri": ENTRA_ERROR_URI.format(code=code),
    }, status=status)


# --- App Service / Functions protocol ----------------------------------------------------

# (status, message, with correlationId). Texts marked "Azure" are what App Service sends;
# the others are worded by the devstack because Azure's exact text is not documented.
_APP_SERVICE_REFUSALS: dict[Reason, tuple[int, str, bool]] = {
    Reason.MISSING_RESOURCE: (400, "Required query parameter 'resource' was not specified.", True),
    Reason.AMBIGUOUS_IDENTITY: (400, "Specify only one of client_id, principal_id (object_id) or mi_res_id.", True),
    # Azure: seen verbatim, without a correlationId.
    Reason.UNKNOWN_IDENTITY: (
        400, "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.",
        False),
    # Azure: the app has no system-assigned identity and no ID was given.
    Reason.NO_SYSTEM_IDENTITY: (400, "Unable to load the proper Managed Identity.", True),
}


def _app_service_error(status: int, message: str, *, with_correlation: bool = True) -> web.Response:
    body: dict[str, Any] = {"statusCode": status, "message": message}
    if with_correlation:
        body["correlationId"] = str(uuid.uuid4())
    return web.json_response(body, status=status)


def _app_service_refusal(refusal: Refusal, config: StackConfig) -> web.Response:
    _log.info("app_service token request refused: %s", refusal.reason.name)
    if refusal.reason in (Reason.UNKNOWN_RESOURCE, Reason.NOT_ASSIGNED):
        # As App Service does: whatever Entra said is hidden behind this vague 500 (typo
        # included), which clients retry. The app's hint for it names the likely causes.
        return _app_service_error(500, "An unexpected error occured while fetching the AAD Token.")
    status, message, with_correlation = _APP_SERVICE_REFUSALS[refusal.reason]
    return _app_service_error(status, message, with_correlation=with_correlation)


def _app_service_api_version_error(request: web.Request) -> web.Response:
    """App Service's API-versioning error (ASP.NET style, as the platform returns it)."""
    version = request.query.get("api-version")
    if version is None:
        error = {"code": "ApiVersionUnspecified", "message": "An API version is required, but was not specified."}
    else:
        error = {"code": "UnsupportedApiVersion",
                 "message": f"The HTTP resource that matches the request URI '{request.url}' "
                            f"does not support the API version '{version}'."}
    return web.json_response({"error": {**error, "innerError": None}}, status=400)


def _has_identity_header(request: web.Request, state: StackState) -> bool:
    supplied = request.headers.get("X-IDENTITY-HEADER", "")
    return secrets.compare_digest(supplied.encode(), state.identity_header.encode())


async def app_service_token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    # The header guards against server-side request forgery, so it is checked first.
    if not _has_identity_header(request, state):
        _log.info("app_service token request refused: X-IDENTITY-HEADER missing or wrong")
        return _app_service_error(401, "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.")
    if request.query.get("api-version") not in APP_SERVICE_API_VERSIONS:
        return _app_service_api_version_error(request)
    try:
        grant = _grant(state, request.query, APP_SERVICE_ID_PARAMS, endpoint="app_service")
    except Refusal as refusal:
        return _app_service_refusal(refusal, state.config)
    # expires_on and not_before are epoch seconds *as strings*, as App Service sends them.
    return web.json_response({
        "access_token": grant.token,
        "expires_on": str(grant.expires_on),
        "not_before": str(grant.not_before),
        "resource": grant.resource,
        "token_type": "Bearer",
        "client_id": grant.identity.client_id,
    })


# --- IMDS protocol -----------------------------------------------------------------------

# (status, OAuth error, description). "Required metadata header not specified",
# "Required audience parameter not specified" and "Identity not found" are IMDS's own texts.
_IMDS_REFUSALS: dict[Reason, tuple[int, str, str]] = {
    Reason.MISSING_RESOURCE: (400, "invalid_request", "Required audience parameter not specified"),
    Reason.AMBIGUOUS_IDENTITY: (400, "invalid_request",
                                "Specify only one of client_id, object_id or mi_res_id"),
    Reason.UNKNOWN_IDENTITY: (400, "invalid_request", "Identity not found"),
    Reason.NO_SYSTEM_IDENTITY: (400, "invalid_request", "Identity not found"),
}


def _imds_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status)


def _imds_refusal(refusal: Refusal, config: StackConfig) -> web.Response:
    _log.info("imds token request refused: %s", refusal.reason.name)
    # IMDS passes Entra's own error body through.
    if refusal.reason is Reason.UNKNOWN_RESOURCE:
        return _entra_error(400, "invalid_resource", 500011, _resource_not_found(refusal.resource, config.tenant_id))
    if refusal.reason is Reason.NOT_ASSIGNED:
        return _entra_error(400, "invalid_grant", 501051, _not_assigned(refusal.client_id, config))
    return _imds_error(*_IMDS_REFUSALS[refusal.reason])


async def imds_token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    # Must be exactly "true". azure-identity's availability probe sends no Metadata
    # header and takes this 400 as proof that IMDS is there.
    if request.headers.get("Metadata") != "true":
        _log.info("imds token request refused: no 'Metadata: true' header")
        return _imds_error(400, "invalid_request", "Required metadata header not specified")
    if request.query.get("api-version") not in IMDS_API_VERSIONS:
        return _imds_error(400, "invalid_request", "Invalid 'api-version' requested")
    try:
        grant = _grant(state, request.query, IMDS_ID_PARAMS, endpoint="imds")
    except Refusal as refusal:
        return _imds_refusal(refusal, state.config)
    # IMDS sends every value as a string; msal needs expires_in, azure-identity either.
    lifetime = str(grant.expires_on - grant.issued_at)
    return web.json_response({
        "access_token": grant.token,
        "client_id": grant.identity.client_id,
        "expires_in": lifetime,
        "expires_on": str(grant.expires_on),
        "ext_expires_in": lifetime,
        "not_before": str(grant.not_before),
        "resource": grant.resource,
        "token_type": "Bearer",
    })


# --- what both token endpoints share -----------------------------------------------------

@dataclass(frozen=True)
class Grant:
    """An issued token and the facts the endpoints put next to it."""

    identity: Identity
    resource: str
    token: str
    issued_at: int
    not_before: int
    expires_on: int


def _grant(state: StackState, query: Mapping[str, str], id_params: Mapping[str, str], *, endpoint: str) -> Grant:
    """Pick the identity, check the resource and issue a token, or raise Refusal."""
    resource = query.get("resource", "")
    if not resource:
        raise Refusal(Reason.MISSING_RESOURCE)
    identity = _select_identity(state.config, query, id_params)
    if not _is_known_resource(state.config, resource):
        raise Refusal(Reason.UNKNOWN_RESOURCE, resource)
    api = state.config.api
    if api.assignment_required and api.matches(resource) and not identity.roles:
        raise Refusal(Reason.NOT_ASSIGNED, resource, identity.client_id)
    token, claims = state.issuer.issue(identity, resource)
    state.stats.count(SERVICE, "tokens_issued")
    state.stats.count(SERVICE, "by_client_id", identity.client_id)
    _log.info("%s token issued to identity '%s' for resource %s", endpoint, identity.name, resource)
    return Grant(identity=identity, resource=resource, token=token,
                 issued_at=claims["iat"], not_before=claims["nbf"], expires_on=claims["exp"])


def _select_identity(config: StackConfig, query: Mapping[str, str], id_params: Mapping[str, str]) -> Identity:
    """The identity named by the one ID parameter given, else the system-assigned one."""
    given = {param: query[param] for param in id_params if query.get(param)}
    if len(given) > 1:
        raise Refusal(Reason.AMBIGUOUS_IDENTITY)
    if not given:
        if config.system_identity is None:
            raise Refusal(Reason.NO_SYSTEM_IDENTITY)
        return config.system_identity
    [(param, value)] = given.items()
    identity = config.find_identity(**{id_params[param]: value})
    if identity is None:
        raise Refusal(Reason.UNKNOWN_IDENTITY)
    return identity


def _is_known_resource(config: StackConfig, resource: str) -> bool:
    """The API app, or one of the Azure resources the config lists (trailing slash optional)."""
    wanted = resource.rstrip("/").lower()
    return config.api.matches(resource) or wanted in {r.rstrip("/").lower() for r in config.other_resources}


# --- counters and faults ------------------------------------------------------------------

def _fault_body_app_service(status: int) -> dict[str, Any]:
    return {"statusCode": status, "message": f"Injected fault: {_reason_phrase(status)}",
            "correlationId": str(uuid.uuid4())}


def _fault_body_imds(status: int) -> dict[str, Any]:
    error = "server_error" if status >= 500 else "invalid_request"
    return {"error": error, "error_description": f"Injected fault: {_reason_phrase(status)}"}


def _reason_phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _token_endpoint(request: web.Request) -> str | None:
    """"app_service" or "imds" for a token request, None for discovery and keys."""
    return TOKEN_ENDPOINTS.get(request.path.rstrip("/"))


def _count_token_requests(state: StackState) -> Any:
    """Count every token request. Placed before the fault middlewares, so faulted
    requests are counted too."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        endpoint = _token_endpoint(request)
        if endpoint is not None:
            state.stats.count(SERVICE, "token_requests")
            state.stats.count(SERVICE, "by_endpoint", endpoint)
        return await handler(request)

    return middleware


def _faults_for(state: StackState, endpoint: str, error_body: Callable[[int], dict[str, Any]]) -> Any:
    """Identity faults hit the token endpoints only, each with its own error body:
    discovery and JWKS are what APIM reads, and a fault is meant for the token call."""
    return fault_middleware(SERVICE, state.faults, error_body=error_body,
                            applies_to=lambda request: _token_endpoint(request) == endpoint)


# --- Entra OpenID discovery and keys -----------------------------------------------------

def _tenant_in_path(config: StackConfig, tenant: str) -> str | None:
    """The tenant ID to publish for a path segment, the placeholder for /common, or None."""
    if tenant.lower() == config.tenant_id.lower():
        return config.tenant_id
    if tenant.lower() in MULTI_TENANT_ALIASES:
        return TENANT_PLACEHOLDER
    return None


def _unknown_tenant(tenant: str) -> web.Response:
    return _entra_error(400, "invalid_tenant", 90002, (
        f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
        "signing into the correct cloud. Check with your subscription administrator, this may happen if there "
        "are no active subscriptions for the tenant."))


def _discovery_json(body: dict[str, Any]) -> web.Response:
    return web.json_response(body, headers={"Cache-Control": DISCOVERY_CACHE_CONTROL})


def _openid_configuration_v2(base: str, segment: str, tenant_id: str) -> dict[str, Any]:
    """The v2.0 document. The issuer is Entra's real one (tokens carry it); every
    endpoint points at this loopback service, so nothing leaves the machine."""
    authority = f"{base}/{segment}"
    return {
        "token_endpoint": f"{authority}/oauth2/v2.0/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{authority}/discovery/v2.0/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "issuer": v2_issuer(tenant_id),
        "request_uri_parameter_supported": False,
        "userinfo_endpoint": "https://graph.microsoft.com/oidc/userinfo",
        "authorization_endpoint": f"{authority}/oauth2/v2.0/authorize",
        "device_authorization_endpoint": f"{authority}/oauth2/v2.0/devicecode",
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{authority}/oauth2/v2.0/logout",
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                             "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
                             "nonce", "preferred_username", "name", "tid", "ver", "at_hash", "c_hash", "email"],
        "kerberos_endpoint": f"{authority}/kerberos",
        "tenant_region_scope": "WW",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def _openid_configuration_v1(base: str, segment: str, tenant_id: str) -> dict[str, Any]:
    """The v1 document: issuer https://sts.windows.net/{tid}/, the one v1 tokens carry."""
    authority = f"{base}/{segment}"
    return {
        "token_endpoint": f"{authority}/oauth2/token",
        "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
        "jwks_uri": f"{authority}/discovery/keys",
        "response_modes_supported": ["query", "fragment", "form_post"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "http_logout_supported": True,
        "frontchannel_logout_supported": True,
        "end_session_endpoint": f"{authority}/oauth2/logout",
        "response_types_supported": ["code", "id_token", "code id_token", "token id_token", "token"],
        "scopes_supported": ["openid"],
        "issuer": v1_issuer(tenant_id),
        "claims_supported": ["sub", "iss", "cloud_instance_name", "cloud_instance_host_name",
                             "cloud_graph_host_name", "msgraph_host", "aud", "exp", "iat", "auth_time", "acr",
                             "amr", "nonce", "email", "given_name", "family_name", "nickname"],
        "microsoft_multi_refresh_token": True,
        "check_session_iframe": f"{authority}/oauth2/checksession",
        "userinfo_endpoint": f"{authority}/openid/userinfo",
        "authorization_endpoint": f"{authority}/oauth2/authorize",
        "device_authorization_endpoint": f"{authority}/oauth2/devicecode",
        "kerberos_endpoint": f"{authority}/kerberos",
        "tenant_region_scope": "WW",
        "cloud_instance_name": "microsoftonline.com",
        "cloud_graph_host_name": "graph.windows.net",
        "msgraph_host": "graph.microsoft.com",
        "rbac_url": "https://pas.windows.net",
    }


def _discovery_handler(build: Callable[[str, str, str], dict[str, Any]]) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        state = request.app[STATE]
        segment = request.match_info["tenant"]
        state.stats.count(SERVICE, "openid_config_requests")
        tenant_id = _tenant_in_path(state.config, segment)
        if tenant_id is None:
            return _unknown_tenant(segment)
        base = str(request.url.origin())
        return _discovery_json(build(base, segment.lower(), tenant_id))

    return handler


def _keys_handler(*, v2: bool) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        state = request.app[STATE]
        segment = request.match_info["tenant"]
        state.stats.count(SERVICE, "jwks_requests")
        tenant_id = _tenant_in_path(state.config, segment)
        if tenant_id is None:
            return _unknown_tenant(segment)
        key = state.issuer.key.jwk(v2_issuer(tenant_id))
        if not v2:
            key.pop("issuer")  # Entra's v1 key set carries no issuer
        return _discovery_json({"keys": [key]})

    return handler


# --- the application ---------------------------------------------------------------------

def create_app(state: StackState) -> web.Application:
    app = web.Application(middlewares=[
        _count_token_requests(state),
        _faults_for(state, "app_service", _fault_body_app_service),
        _faults_for(state, "imds", _fault_body_imds),
    ])
    app[STATE] = state
    for path in (APP_SERVICE_PATH, APP_SERVICE_PATH + "/"):  # Azure's own samples append "/"
        app.router.add_get(path, app_service_token, allow_head=False)
    app.router.add_get(IMDS_PATH, imds_token, allow_head=False)
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration",
                       _discovery_handler(_openid_configuration_v2))
    app.router.add_get("/{tenant}/.well-known/openid-configuration", _discovery_handler(_openid_configuration_v1))
    app.router.add_get("/{tenant}/discovery/v2.0/keys", _keys_handler(v2=True))
    app.router.add_get("/{tenant}/discovery/keys", _keys_handler(v2=False))
    return app
