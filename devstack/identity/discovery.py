"""Entra-style OpenID discovery: v2 and v1 `.well-known/openid-configuration` and their JWKS.

Token validators (APIM's validate-jwt, PyJWT) find the signing keys here. The key
sets list both published keys (devstack/entra.py), each with `x5c` and `x5t` and
no `alg`, as Entra's do; documents and keys carry Entra's Cache-Control header.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from devstack.config import StackConfig
from devstack.entra import v1_issuer, v2_issuer
from devstack.identity.entra_errors import entra_error, unknown_tenant
from devstack.state import STATE

SERVICE = "identity"
# Entra answers /common and /organizations with this literal placeholder in `issuer`.
MULTI_TENANT_ALIASES = ("common", "organizations")
TENANT_PLACEHOLDER = "{tenantid}"
# Entra serves discovery documents and keys with this header.
DISCOVERY_CACHE_CONTROL = "max-age=86400, private"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _tenant_in_path(config: StackConfig, tenant: str) -> str | None:
    """The tenant ID to publish for a path segment, the placeholder for /common, or None."""
    if tenant.lower() == config.tenant_id.lower():
        return config.tenant_id
    if tenant.lower() in MULTI_TENANT_ALIASES:
        return TENANT_PLACEHOLDER
    return None


def _unknown_tenant(tenant: str) -> web.Response:
    return entra_error(400, "invalid_tenant", 90002, unknown_tenant(tenant))


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
        # Entra's v2 key set names each key's issuer; the v1 key set does not.
        return _discovery_json(state.issuer.keys.jwks(v2_issuer(tenant_id) if v2 else None))

    return handler


def add_routes(app: web.Application) -> None:
    app.router.add_get("/{tenant}/v2.0/.well-known/openid-configuration", _discovery_handler(_openid_configuration_v2))
    app.router.add_get("/{tenant}/.well-known/openid-configuration", _discovery_handler(_openid_configuration_v1))
    app.router.add_get("/{tenant}/discovery/v2.0/keys", _keys_handler(v2=True))
    app.router.add_get("/{tenant}/discovery/keys", _keys_handler(v2=False))
