"""The Azure Instance Metadata Service (IMDS) managed-identity protocol.

`GET /metadata/identity/oauth2/token` with `Metadata: true`; clients reach it
through `AZURE_POD_IDENTITY_AUTHORITY_HOST`. Any api-version from 2018-02-01 on is
accepted. A token answer carries every value as a string: `expires_in` counts down
to the cached token's expiry, `ext_expires_in` stays as minted, and `not_before` is
there (azure-identity's recorded IMDS captures). Errors are `{"error",
"error_description"}`, and Entra's own body when Entra refused the token.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web

from devstack.config import StackConfig
from devstack.identity.entra_errors import entra_error, not_assigned, resource_not_found
from devstack.identity.platform import Reason, Refusal, reason_phrase, token_for
from devstack.state import STATE

PATH = "/metadata/identity/oauth2/token"
# The first IMDS version with the identity endpoint; later ones answer the same way.
OLDEST_API_VERSION = "2018-02-01"
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# IMDS documents client_id, object_id and mi_res_id; msal sends msi_res_id.
ID_PARAMS = {"client_id": "client_id", "object_id": "principal_id",
             "mi_res_id": "resource_id", "msi_res_id": "resource_id"}

_log = logging.getLogger(__name__)

# (status, OAuth error, description). "Required metadata header not specified",
# "Required audience parameter not specified" and "Identity not found" are IMDS's own texts.
_REFUSALS: dict[Reason, tuple[int, str, str]] = {
    Reason.MISSING_RESOURCE: (400, "invalid_request", "Required audience parameter not specified"),
    Reason.AMBIGUOUS_IDENTITY: (400, "invalid_request", "Specify only one of client_id, object_id or mi_res_id"),
    Reason.UNKNOWN_IDENTITY: (400, "invalid_request", "Identity not found"),
    Reason.NO_SYSTEM_IDENTITY: (400, "invalid_request", "Identity not found"),
}


def error(status: int, code: str, description: str) -> web.Response:
    return web.json_response({"error": code, "error_description": description}, status=status)


def fault_body(status: int) -> dict[str, Any]:
    return {"error": "server_error" if status >= 500 else "invalid_request",
            "error_description": f"Injected fault: {reason_phrase(status)}"}


def supported_api_version(version: str | None) -> bool:
    return version is not None and bool(_DATE.match(version)) and version >= OLDEST_API_VERSION


def _refusal(refusal: Refusal, config: StackConfig) -> web.Response:
    _log.info("imds token request refused: %s", refusal.reason.name)
    # IMDS passes Entra's own error body through.
    if refusal.reason is Reason.UNKNOWN_RESOURCE:
        return entra_error(400, "invalid_resource", 500011, resource_not_found(refusal.resource, config.tenant_id))
    if refusal.reason is Reason.NOT_ASSIGNED:
        return entra_error(400, "invalid_grant", 501051, not_assigned(refusal.client_id, config, refusal.resource))
    return error(*_REFUSALS[refusal.reason])


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    # Must be exactly "true". azure-identity's availability probe sends no Metadata
    # header and takes this 400 as proof that IMDS is there.
    if request.headers.get("Metadata") != "true":
        _log.info("imds token request refused: no 'Metadata: true' header")
        return error(400, "invalid_request", "Required metadata header not specified")
    if not supported_api_version(request.query.get("api-version")):
        return error(400, "invalid_request", "Invalid 'api-version' requested")
    try:
        grant = token_for(state, request.query, ID_PARAMS, endpoint="imds")
    except Refusal as refusal:
        return _refusal(refusal, state.config)
    return web.json_response({
        "access_token": grant.token,
        "client_id": grant.identity.client_id,
        "expires_in": str(max(grant.expires_on - state.platform.now(), 0)),
        "expires_on": str(grant.expires_on),
        "ext_expires_in": str(grant.expires_on - grant.minted_at),
        "not_before": str(grant.issued_at),
        "resource": grant.resource,
        "token_type": "Bearer",
    })
