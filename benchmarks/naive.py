"""The naive baseline: the function as many samples write it.

A new `DefaultAzureCredential` and a new `aiohttp` session on every invocation,
so every call pays a token request and two new connections. (No telemetry of
its own: samples like this rarely add any; the process-wide configuration
still traces azure-identity's token request, as it would in that app.)

Why `DefaultAzureCredential` is safe to run here: its chain is Environment →
WorkloadIdentity → ManagedIdentity → SharedTokenCache → VS Code → Azure CLI →
PowerShell → azd. With IDENTITY_ENDPOINT/IDENTITY_HEADER set (App Service's
managed-identity protocol, as the devstack's settings do) the first two are
unavailable without any I/O and ManagedIdentityCredential answers from the
identity stand-in on loopback, so the chain stops there: no IMDS probe of
169.254.169.254 and no developer tool is run. `NetworkAudit` checks that claim
on every run (Python's audit hooks see every socket connect and DNS lookup).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

import aiohttp
import azure.functions as func
from azure.identity.aio import DefaultAzureCredential

from devstack.appsettings import is_loopback_host


class NaiveFunction:
    """An HTTP-triggered function body: credential and session created per invocation."""

    def __init__(self, settings: Mapping[str, str]) -> None:
        self.base_url = settings["APIM_BASE_URL"]
        self.scope = f"{settings['API_APP_ID_URI']}/.default"
        self.client_id = settings["MANAGED_IDENTITY_CLIENT_ID"]
        self.key = settings.get("APIM_SUBSCRIPTION_KEY", "")

    async def __call__(self, req: func.HttpRequest, context: Any) -> func.HttpResponse:
        credential = DefaultAzureCredential(managed_identity_client_id=self.client_id)
        try:
            token = await credential.get_token(self.scope)
            headers = {"Authorization": f"Bearer {token.token}", "Ocp-Apim-Subscription-Key": self.key}
            async with aiohttp.ClientSession() as session, \
                    session.get(f"{self.base_url}/{req.route_params['path']}", headers=headers) as response:
                body = await response.read()
                return func.HttpResponse(body, status_code=response.status,
                                         mimetype=response.content_type or "application/octet-stream")
        finally:
            await credential.close()


class NetworkAudit:
    """Every host a socket connected to (or looked up) while `enabled`, from Python's audit hooks."""

    def __init__(self) -> None:
        self.enabled = False
        self.hosts: set[str] = set()
        sys.addaudithook(self._hook)  # hooks cannot be removed; `enabled` keeps it idle otherwise

    def _hook(self, event: str, args: tuple[Any, ...]) -> None:
        if not self.enabled:
            return
        if event == "socket.connect" and isinstance(args[1], tuple):
            self.hosts.add(str(args[1][0]))
        elif event == "socket.getaddrinfo":
            self.hosts.add(str(args[0]))

    def non_loopback(self) -> list[str]:
        return sorted(host for host in self.hosts if not is_loopback_host(host))


