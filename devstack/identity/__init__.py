"""The identity stand-in: managed-identity token endpoints and Entra-style OpenID discovery.

One loopback service speaks three protocols, so the real azure-identity and msal
clients get tokens from it unchanged, one module each:

- `app_service`: App Service / Functions (`IDENTITY_ENDPOINT` + `IDENTITY_HEADER`).
- `imds`: the Instance Metadata Service (`AZURE_POD_IDENTITY_AUTHORITY_HOST`).
- `discovery`: v2 and v1 OpenID configurations and their key sets.

Behind both token endpoints, `platform` keeps Azure's per-identity-and-resource token
cache and the app role assignments. Token values and the identity header are never
logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aiohttp import web

    from devstack.state import StackState

__all__ = ["create_app"]


def create_app(state: StackState) -> web.Application:
    # Imported here: devstack.state imports devstack.identity.platform, and the
    # endpoint modules import devstack.state.
    from devstack.identity.app import create_app as create

    return create(state)
