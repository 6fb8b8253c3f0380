"""The floor: what one call costs with no app at all, as the same dependencies do it.

One aiohttp session, kept alive; one token request the raw way (App Service's
managed-identity protocol, as azure-identity speaks it), then plain GETs to APIM
with the token and key set. Whatever the app spends above this is its overhead.
"""

from __future__ import annotations

from typing import Any

import aiohttp


class Floor:
    def __init__(self, endpoints: dict[str, Any]) -> None:
        self.endpoints = endpoints
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=200, keepalive_timeout=60))
        self.headers: dict[str, str] = {}

    async def prefetch_token(self, identity: str = "reader") -> None:
        """One raw token request to the identity stand-in."""
        e = self.endpoints
        params = {"api-version": "2019-08-01", "resource": e["api_app_id_uri"],
                  "client_id": e["identities"][identity]["client_id"]}
        async with self.session.get(e["identity_endpoint"], params=params,
                                    headers={"X-IDENTITY-HEADER": e["identity_header"]}) as response:
            response.raise_for_status()
            token = (await response.json())["access_token"]
        self.headers = {"Authorization": f"Bearer {token}", "Ocp-Apim-Subscription-Key": e["subscription_key"]}

    async def call(self, path: str = "status") -> int:
        async with self.session.get(f"{self.endpoints['apim_base_url']}/{path}", headers=self.headers) as response:
            await response.read()
            return response.status

    async def close(self) -> None:
        await self.session.close()
