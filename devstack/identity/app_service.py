"""The App Service / Functions managed-identity protocol.

`GET /msi/token` (`IDENTITY_ENDPOINT`) with the secret header `X-IDENTITY-HEADER`
(`IDENTITY_HEADER`), api-version 2019-08-01. A token answer carries `access_token`,
`expires_on` (epoch seconds as a string), `resource`, `token_type` and `client_id`,
and no `not_before`, as azure-identity's recorded App Service captures show; every
answer carries an `X-CORRELATION-ID` header. Errors are `{"statusCode", "message"}`.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from typing import Any

from aiohttp import web

from devstack.config import StackConfig
from devstack.identity.platform import Reason, Refusal, reason_phrase, token_for
from devstack.state import STATE, StackState

PATH = "/msi/token"
# The version azure-identity and msal send. Older 2017-09-01 uses another header and a
# date-string expires_on, so it is refused rather than half-supported.
API_VERSIONS = frozenset({"2019-08-01"})
# Query parameter that selects a user-assigned identity -> StackConfig.find_identity keyword:
# App Service documents client_id, principal_id (alias object_id) and mi_res_id.
ID_PARAMS = {"client_id": "client_id", "principal_id": "principal_id",
             "object_id": "principal_id", "mi_res_id": "resource_id"}
CORRELATION_HEADER = "X-CORRELATION-ID"

_log = logging.getLogger(__name__)

# (status, message, with correlationId). Texts marked "Azure" are what App Service sends;
# the others are worded by the devstack because Azure's exact text is not documented.
_REFUSALS: dict[Reason, tuple[int, str, bool]] = {
    Reason.MISSING_RESOURCE: (400, "Required query parameter 'resource' was not specified.", True),
    Reason.AMBIGUOUS_IDENTITY: (400, "Specify only one of client_id, principal_id (object_id) or mi_res_id.", True),
    # Azure: seen verbatim, without a correlationId.
    Reason.UNKNOWN_IDENTITY: (
        400, "No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId.",
        False),
    # Azure: the app has no system-assigned identity and no ID was given.
    Reason.NO_SYSTEM_IDENTITY: (400, "Unable to load the proper Managed Identity.", True),
}


def _correlated(response: web.Response) -> web.Response:
    response.headers[CORRELATION_HEADER] = str(uuid.uuid4())
    return response


def error(status: int, message: str, *, with_correlation: bool = True) -> web.Response:
    body: dict[str, Any] = {"statusCode": status, "message": message}
    if with_correlation:
        body["correlationId"] = str(uuid.uuid4())
    return _correlated(web.json_response(body, status=status))


def fault_body(status: int) -> dict[str, Any]:
    return {"statusCode": status, "message": f"Injected fault: {reason_phrase(status)}",
            "correlationId": str(uuid.uuid4())}


def _refusal(refusal: Refusal, config: StackConfig) -> web.Response:
    _log.info("app_service token request refused: %s", refusal.reason.name)
    if refusal.reason in (Reason.UNKNOWN_RESOURCE, Reason.NOT_ASSIGNED):
        # As App Service does: whatever Entra said is hidden behind this vague 500 (typo
        # included), which clients retry. The app's hint for it names the likely causes.
        return error(500, "An unexpected error occured while fetching the AAD Token.")
    status, message, with_correlation = _REFUSALS[refusal.reason]
    return error(status, message, with_correlation=with_correlation)


def _api_version_error(request: web.Request) -> web.Response:
    """App Service's API-versioning error (ASP.NET style, as the platform returns it)."""
    version = request.query.get("api-version")
    if version is None:
        detail = {"code": "ApiVersionUnspecified", "message": "An API version is required, but was not specified."}
    else:
        detail = {"code": "UnsupportedApiVersion",
                  "message": f"The HTTP resource that matches the request URI '{request.url}' "
                             f"does not support the API version '{version}'."}
    return _correlated(web.json_response({"error": {**detail, "innerError": None}}, status=400))


def _has_identity_header(request: web.Request, state: StackState) -> bool:
    supplied = request.headers.get("X-IDENTITY-HEADER", "")
    return secrets.compare_digest(supplied.encode(), state.identity_header.encode())


async def token(request: web.Request) -> web.Response:
    state = request.app[STATE]
    # The header guards against server-side request forgery, so it is checked first.
    if not _has_identity_header(request, state):
        _log.info("app_service token request refused: X-IDENTITY-HEADER missing or wrong")
        return error(401, "The X-IDENTITY-HEADER header is missing or does not match IDENTITY_HEADER.")
    if request.query.get("api-version") not in API_VERSIONS:
        return _api_version_error(request)
    try:
        grant = token_for(state, request.query, ID_PARAMS, endpoint="app_service")
    except Refusal as refusal:
        return _refusal(refusal, state.config)
    return _correlated(web.json_response({
        "access_token": grant.token,
        "expires_on": str(grant.expires_on),
        "resource": grant.resource,
        "token_type": "Bearer",
        "client_id": grant.identity.client_id,
    }))
