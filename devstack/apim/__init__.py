"""APIM gateway stand-in: subscription keys, and the policy files infra/ deploys.

`create_app` reads `infra/apim` (api.json and the policy XML) when the stand-in
starts and refuses to start, with a PolicyError naming each file and element, on
anything it does not implement. The named values the files use are filled from the
stand-in's own configuration, as Bicep fills them in Azure. `sample_backend_gateway`
runs infra/sample-backend/policy.xml the same way, for the backend service; the
APIM service's own managed identity (authentication-managed-identity) gets its tokens
from the identity stand-in's platform cache.

Modules: `api` (api.json, routes), `registry` (every policy element the stand-in
implements, with its reader and handler; how to add one is there), `statements`
(the statements and `<base />` composition), `reader` (XML to statements),
`expressions` (the policy expressions we support), `jwt_validation` and `openid`
(token checks and signing keys), `gateway` (the request pipeline), `errors` (APIM's
error bodies and our refusal).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from devstack.apim.api import API_FILE, Api, load_api, load_policy_api
from devstack.apim.errors import PolicyError
from devstack.apim.gateway import Gateway, ManagedIdentityToken, ManagedIdentityUnavailable
from devstack.apim.openid import HttpMetadataSource, MetadataSource
from devstack.apim.registry import handlers
from devstack.config import ApiApp, ExtraApi
from devstack.faults import fault_middleware
from devstack.identity.platform import Refusal, is_known_resource
from devstack.network import network_middleware
from devstack.state import StackState

__all__ = ["PolicyError", "create_app", "load_gateway_api", "named_values", "sample_backend_gateway"]

log = logging.getLogger(__name__)

SESSION = web.AppKey("session", aiohttp.ClientSession)
# The Azure CLI's public client ID, the same in every tenant: a developer's own sign-in
# (infra/modules/entra-api.bicep pre-authorizes it).
AZURE_CLI_CLIENT_ID = "04b07795-8ddb-461a-bbee-02f9e1bf7b46"
# The gateway's signing keys, kept in the stack's state: the sample backend is an API of the same
# APIM service, so its token checks share them (one OpenID refetch per unknown kid, not two).
_SIGNING_KEYS = "apim_signing_keys"
# The gateway's own time limit is forward-request's timeout; the client adds none of its own.
_CLIENT_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30)


def named_values(state: StackState, app: ApiApp | None = None) -> dict[str, str]:
    """The named values the policy files of an API (the main one by default) may use, as in Azure."""
    config = state.config
    app = app or config.api
    openid_config_url = state.endpoints.get("openid_config_url")
    if not openid_config_url:
        raise RuntimeError("the APIM stand-in needs state.endpoints['openid_config_url'] (the stack sets it)")
    values = {
        "tenant-id": config.tenant_id,
        "api-app-id-uri": app.app_id_uri,
        "api-client-id": app.client_id,
        "openid-config-url": openid_config_url,
        "reader-role": app.read_role,
        "writer-role": app.write_role,
    }
    # What infra/modules/apim.bicep adds for the sample backend and the call to it.
    if config.sample_backend is not None:
        values["backend-app-id-uri"] = config.sample_backend.app.app_id_uri
        values["sample-backend-app-id-uri"] = config.sample_backend.app.app_id_uri
        values["sample-backend-client-id"] = config.sample_backend.app.client_id
    if config.apim_identity is not None:
        values["apim-backend-client-id"] = config.apim_identity.client_id
    # Who may call (validate-azure-ad-token's client-application-ids), as infra/ fills them.
    for role in ("reader", "writer"):
        if role in config.identities:
            values[f"{role}-client-id"] = config.identities[role].client_id
    values["developer-client-id"] = AZURE_CLI_CLIENT_ID
    return values


def load_extra_api(state: StackState, extra: ExtraApi) -> Api:
    """A further API's api.json and policies, with its own app registration's named values."""
    api = load_api(extra.policy_dir, named_values(state, extra.app), entra_tenant_id=state.config.tenant_id)
    if api.path != extra.api_path:
        raise PolicyError([f"{extra.policy_dir / 'api.json'}: path '{api.path}' differs from the devstack config's "
                           f"api_path '{extra.api_path}' for {extra.name}"])
    return api


def load_gateway_api(state: StackState, policy_dir: Path | None = None) -> Api:
    """Read and check infra/apim for this stack; raise PolicyError on any problem."""
    config = state.config
    directory = policy_dir or config.policy_dir
    api = load_api(directory, named_values(state), entra_tenant_id=config.tenant_id)
    if api.path != config.api_path:
        raise PolicyError([f"{directory / 'api.json'}: path '{api.path}' differs from the devstack config's "
                           f"apim.api_path '{config.api_path}' (apim_base_url would point at the wrong API)"])
    return api


def create_app(state: StackState, *, metadata_source: MetadataSource | None = None,
               policy_dir: Path | None = None) -> web.Application:
    """The APIM gateway app. `metadata_source` replaces fetching OpenID metadata over HTTP (tests)."""
    # The Orders API's serviceUrl: the sample backend's path on the backend service (in Azure, the
    # same path on the APIM gateway itself).
    sample = state.config.sample_backend
    apis = [(load_gateway_api(state, policy_dir), f"/{sample.api_path}" if sample else "")]
    # A further API is served by the same gateway under its own path; its backend is the sample
    # backend's /<name> part (the API's own serviceUrl in Azure).
    apis += [(load_extra_api(state, extra), f"/{extra.name}") for extra in state.config.extra_apis]
    app = web.Application(middlewares=[
        network_middleware(state),  # the modelled network is outside the gateway
        _count_requests(state),  # first, so that injected faults are counted too
        fault_middleware("apim", state.faults, error_body=_fault_body),
    ])

    app.cleanup_ctx.append(_client_session)
    keys = metadata_source or HttpMetadataSource(session=lambda: app[SESSION],
                                                 min_refresh_seconds=state.config.openid_refetch_seconds)
    state.extras[_SIGNING_KEYS] = keys
    gateways = [Gateway(
        api,
        service_url=state.endpoints["backend_url"] + backend_prefix,
        subscription_key=state.subscription_key,
        entra_config_url=state.endpoints["openid_config_url"],
        keys=keys,
        session=lambda: app[SESSION],
        handlers=handlers(),
        managed_identity=managed_identity_token(state),
    ) for api, backend_prefix in apis]

    async def handle(request: web.Request) -> web.StreamResponse:
        # APIM picks the API by the first segments of the path (its "API URL suffix").
        path = request.rel_url.raw_path
        for gateway in gateways[1:]:
            if path == f"/{gateway.api.path}" or path.startswith(f"/{gateway.api.path}/"):
                return await gateway.handle(request)
        return await gateways[0].handle(request)

    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def _client_session(app: web.Application) -> AsyncIterator[None]:
    """The app's own session for what the gateway sends (forward-request, OpenID metadata)."""
    async with aiohttp.ClientSession(timeout=_CLIENT_TIMEOUT, auto_decompress=False) as session:
        app[SESSION] = session
        yield


def managed_identity_token(state: StackState) -> ManagedIdentityToken:
    """The APIM service's user-assigned identity, served by the identity stand-in's platform cache
    (which holds one token per identity and resource, as APIM's own cache does)."""

    async def token(resource: str, client_id: str) -> str:
        identity = state.config.apim_identity
        if identity is None:
            raise ManagedIdentityUnavailable("the stack's config gives API Management no identity (apim.identity)")
        if identity.client_id.lower() != client_id.lower():
            raise ManagedIdentityUnavailable(f"no identity with client ID {client_id} is assigned to API Management")
        if not is_known_resource(state.config, resource):
            raise ManagedIdentityUnavailable(f"Entra knows no resource '{resource}' in the tenant")
        try:
            grant, _ = state.platform.grant(identity, resource)
        except Refusal as refusal:
            raise ManagedIdentityUnavailable(f"Entra refused: {refusal.reason.name}") from None
        return grant.token

    return token


def sample_backend_gateway(state: StackState, app: web.Application, *,
                           metadata_source: MetadataSource | None = None) -> Gateway:
    """The sample backend API (infra/sample-backend/policy.xml on the Orders API's operations), run by
    the same policy engine; its HTTP session and signing keys are `app`'s own."""
    config = state.config
    sample = config.sample_backend
    if sample is None:
        raise ValueError("the stack's config has no sample_backend")
    api = load_policy_api(config.policy_dir / API_FILE, sample.policy, path=sample.api_path,
                          named_values=named_values(state), entra_tenant_id=config.tenant_id)

    app.cleanup_ctx.append(_client_session)
    keys = metadata_source or state.extras.get(_SIGNING_KEYS) or HttpMetadataSource(
        session=lambda: app[SESSION], min_refresh_seconds=config.openid_refetch_seconds)
    return Gateway(api, service_url="", subscription_key="", entra_config_url=state.endpoints["openid_config_url"],
                   keys=keys, session=lambda: app[SESSION], handlers=handlers(),
                   managed_identity=managed_identity_token(state))


def _fault_body(status: int) -> dict[str, Any]:
    try:
        message = HTTPStatus(status).phrase
    except ValueError:
        message = "Injected fault"
    return {"statusCode": status, "message": message}


def _count_requests(state: StackState) -> Any:
    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        state.stats.count("apim", "requests")
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            raise
        finally:
            state.stats.count("apim", "by_status", str(status))
            # The path only: the query may hold a subscription key.
            log.info("%s %s -> %d", request.method, request.rel_url.raw_path, status)

    return middleware
