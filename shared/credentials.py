"""Which credential gets tokens for an identity.

One credential instance per identity for the life of the process: each holds
its own token cache and HTTP pipeline, so creating one per call would cost a
token request and a connection every time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from azure.core.credentials_async import AsyncSupportsTokenInfo
from azure.identity.aio import (
    AzureCliCredential,
    AzureDeveloperCliCredential,
    ChainedTokenCredential,
    ManagedIdentityCredential,
)

# Set on App Service and Functions (IDENTITY_ENDPOINT, WEBSITE_INSTANCE_ID; MSI_ENDPOINT in the
# older protocol) and with AKS pod identity. Elsewhere (a VM included), without a client ID, the
# developer's login is used: set MANAGED_IDENTITY_CLIENT_ID to use a VM's identity.
_AZURE_HOST_MARKERS = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "WEBSITE_INSTANCE_ID", "AZURE_POD_IDENTITY_AUTHORITY_HOST")

# azure-identity waits up to 300 s for each answer from the identity endpoint, and tries
# up to four times: a hung endpoint would hold every invocation past Functions' 230 s
# HTTP limit. A healthy endpoint answers in well under a second, so bound each attempt
# (IMDS's own connect timeout is 2 s too). The runtime passes its own (tests shorten them).
IDENTITY_CONNECTION_TIMEOUT = 2.0
IDENTITY_READ_TIMEOUT = 10.0

__all__ = ["IDENTITY_CONNECTION_TIMEOUT", "IDENTITY_READ_TIMEOUT", "create_credential", "running_on_azure"]


def running_on_azure(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in _AZURE_HOST_MARKERS)


def create_credential(client_id: str | None, tenant_id: str | None = None,
                      environ: Mapping[str, str] | None = None, *,
                      connection_timeout: float = IDENTITY_CONNECTION_TIMEOUT,
                      read_timeout: float = IDENTITY_READ_TIMEOUT) -> AsyncSupportsTokenInfo:
    """A user-assigned identity by client ID; else system-assigned in Azure; else the developer's login."""
    if client_id or running_on_azure(environ):
        # client_id=None is the system-assigned identity.
        return ManagedIdentityCredential(client_id=client_id, connection_timeout=connection_timeout,
                                         read_timeout=read_timeout)
    return ChainedTokenCredential(
        AzureCliCredential(tenant_id=tenant_id or ""),  # "": the CLI's own tenant, as azure-identity's default
        AzureDeveloperCliCredential(tenant_id=tenant_id or ""),
    )
