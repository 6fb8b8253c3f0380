"""Which credential gets tokens for an identity.

One credential instance per identity for the life of the process: each holds
its own token cache and HTTP pipeline, so creating one per call would cost a
token request and a connection every time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import (
    AzureCliCredential,
    AzureDeveloperCliCredential,
    ChainedTokenCredential,
    ManagedIdentityCredential,
)

# Set by App Service / Functions (IDENTITY_ENDPOINT) or present on Azure VMs (IMDS is
# probed by azure-identity itself); WEBSITE_INSTANCE_ID marks any App Service host.
_AZURE_HOST_MARKERS = ("IDENTITY_ENDPOINT", "MSI_ENDPOINT", "WEBSITE_INSTANCE_ID", "AZURE_POD_IDENTITY_AUTHORITY_HOST")


def running_on_azure(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name) for name in _AZURE_HOST_MARKERS)


def create_credential(client_id: str | None, tenant_id: str | None = None,
                      environ: Mapping[str, str] | None = None) -> AsyncTokenCredential:
    """A user-assigned identity by client ID; else system-assigned in Azure; else the developer's login."""
    if client_id:
        return ManagedIdentityCredential(client_id=client_id)
    if running_on_azure(environ):
        return ManagedIdentityCredential()
    return ChainedTokenCredential(
        AzureCliCredential(tenant_id=tenant_id),
        AzureDeveloperCliCredential(tenant_id=tenant_id),
    )


def describe(credential: AsyncTokenCredential) -> str:
    """A short, non-secret name for telemetry and health output."""
    if isinstance(credential, ManagedIdentityCredential):
        return "managed_identity"
    return "developer_credential"
