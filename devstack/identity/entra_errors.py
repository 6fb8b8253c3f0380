"""Error bodies as login.microsoftonline.com sends them (IMDS passes them through)."""

from __future__ import annotations

import time
import uuid

from aiohttp import web

from devstack.config import StackConfig

ENTRA_ERROR_URI = "https://login.microsoftonline.com/error?code={code}"


def resource_not_found(resource: str, tenant_id: str) -> str:
    """Entra's AADSTS500011 text for a resource with no service principal in the tenant."""
    return (f"AADSTS500011: The resource principal named {resource} was not found in the tenant named "
            f"{tenant_id}. This can happen if the application has not been installed by the administrator "
            "of the tenant or consented to by any user in the tenant. You might have sent your authentication "
            "request to the wrong tenant.")


def not_assigned(identity_client_id: str, config: StackConfig, resource: str = "") -> str:
    """Entra's AADSTS501051 text: the API requires an app role and the client has none."""
    api = config.api_for(resource) or config.api
    return (f"AADSTS501051: Application '{identity_client_id}' is not assigned to a role for the application "
            f"'{api.app_id_uri}'({api.display_name}).")


def unknown_tenant(tenant: str) -> str:
    return (f"AADSTS90002: Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are "
            "signing into the correct cloud. Check with your subscription administrator, this may happen if there "
            "are no active subscriptions for the tenant.")


def entra_error(status: int, error: str, code: int, text: str) -> web.Response:
    """An error body as Entra sends it, trace and correlation IDs included."""
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
