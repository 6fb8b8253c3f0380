"""What the managed-identity platform does behind both token endpoints.

Azure keeps one token per identity and resource and hands that same token to
every request, including one that bypasses the client's own cache, until it
expires (Microsoft Entra "managed identity best practice recommendations": the
platform caches tokens for about 24 hours; Azure/azure-sdk-for-net#27019). So a
role assigned or removed shows only in a token minted after the cached one is
replaced. `PlatformTokenCache` is that cache; `RoleAssignments` are the app role
assignments Entra reads when it mints. The control API can roll the cache over
("as if the platform refreshed") and change assignments at runtime.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum, auto
from http import HTTPStatus
from typing import TYPE_CHECKING

from devstack.config import Identity, StackConfig
from devstack.entra import TokenIssuer

if TYPE_CHECKING:
    from devstack.state import StackState

_log = logging.getLogger(__name__)


class Reason(Enum):
    """Why a well-formed, authorised token request gets no token."""

    MISSING_RESOURCE = auto()
    AMBIGUOUS_IDENTITY = auto()
    UNKNOWN_IDENTITY = auto()
    NO_SYSTEM_IDENTITY = auto()
    UNKNOWN_RESOURCE = auto()
    NOT_ASSIGNED = auto()  # the API requires an app role assignment and the identity has none


class Refusal(Exception):
    """A token request the endpoint refuses; each endpoint words it its own way."""

    def __init__(self, reason: Reason, resource: str = "", client_id: str = "") -> None:
        super().__init__(reason.name)
        self.client_id = client_id
        self.reason = reason
        self.resource = resource


class UnknownRole(ValueError):
    """A role or identity name the stack's configuration does not have."""


class RoleAssignments:
    """App role assignments on the API, per identity name; they start as configured. Thread-safe."""

    def __init__(self, config: StackConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._roles = {name: tuple(identity.roles) for name, identity in config.identities.items()}

    def of(self, identity: Identity) -> tuple[str, ...]:
        with self._lock:
            return self._roles.get(identity.name, identity.roles)

    def snapshot(self) -> dict[str, list[str]]:
        with self._lock:
            return {name: list(roles) for name, roles in self._roles.items()}

    def reset(self) -> None:
        """Back to the configured assignments."""
        with self._lock:
            self._roles = {name: tuple(identity.roles) for name, identity in self._config.identities.items()}

    def assign(self, name: str, role: str) -> tuple[str, ...]:
        self._check(name, role)
        with self._lock:
            if role not in self._roles[name]:
                self._roles[name] = (*self._roles[name], role)
            return self._roles[name]

    def remove(self, name: str, role: str) -> tuple[str, ...]:
        self._check(name, role)
        with self._lock:
            self._roles[name] = tuple(r for r in self._roles[name] if r != role)
            return self._roles[name]

    def _check(self, name: str, role: str) -> None:
        if name not in self._config.identities:
            raise UnknownRole(f"unknown identity '{name}'; the stack has: {', '.join(sorted(self._config.identities))}")
        defined = [r for api in self._config.apis for r in api.app_roles]
        if role not in defined:
            raise UnknownRole(f"unknown app role '{role}'; the APIs define: {', '.join(defined)}")


@dataclass(frozen=True)
class Grant:
    """A token the platform hands out, and the facts the endpoints put next to it."""

    identity: Identity
    resource: str
    token: str
    issued_at: int  # iat: set back from when it was minted
    minted_at: int
    expires_on: int


class PlatformTokenCache:
    """One token per (identity, resource), served until it expires or the cache is rolled over."""

    def __init__(self, issuer: TokenIssuer, roles: RoleAssignments,
                 clock: Callable[[], float] = time.time) -> None:
        self._issuer = issuer
        self._roles = roles
        self._clock = clock
        self._lock = threading.Lock()
        self._grants: dict[tuple[str, str], Grant] = {}

    def grant(self, identity: Identity, resource: str) -> tuple[Grant, bool]:
        """(the cached or a newly minted grant, True if minted). Raises Refusal for an API
        that requires an app role the identity does not hold when a token must be minted."""
        key = (identity.client_id.lower(), resource)
        now = int(self._clock())
        with self._lock:
            cached = self._grants.get(key)
            if cached is not None and now < cached.expires_on:
                return cached, False
            api = self._issuer.config.api_for(resource)
            # App roles belong to one app registration: a token for this API carries only its roles.
            roles = tuple(r for r in self._roles.of(identity) if api and r in api.app_roles)
            if api is not None and api.assignment_required and not roles:
                raise Refusal(Reason.NOT_ASSIGNED, resource, identity.client_id)
            claims = self._issuer.claims_for(identity, resource, roles=roles, now=now)
            grant = Grant(identity=identity, resource=resource, token=self._issuer.sign(claims),
                          issued_at=claims["iat"], minted_at=now, expires_on=claims["exp"])
            self._grants[key] = grant
            return grant, True

    def roll_over(self, identity: Identity | None = None) -> int:
        """Forget cached tokens (one identity's, or all), as if the platform refreshed; returns how many."""
        with self._lock:
            keys = [k for k in self._grants if identity is None or k[0] == identity.client_id.lower()]
            for key in keys:
                del self._grants[key]
        _log.info("platform token cache rolled over (%d tokens)", len(keys))
        return len(keys)

    def now(self) -> int:
        return int(self._clock())


# --- choosing the identity and checking the resource ----------------------------------

def select_identity(config: StackConfig, query: Mapping[str, str], id_params: Mapping[str, str]) -> Identity:
    """The identity named by the one ID parameter given, else the system-assigned one."""
    given = {param: query[param] for param in id_params if query.get(param)}
    if len(given) > 1:
        raise Refusal(Reason.AMBIGUOUS_IDENTITY)
    if not given:
        if config.system_identity is None:
            raise Refusal(Reason.NO_SYSTEM_IDENTITY)
        return config.system_identity
    [(param, value)] = given.items()
    identity = config.find_identity(**{id_params[param]: value})
    if identity is None:
        raise Refusal(Reason.UNKNOWN_IDENTITY)
    return identity


def is_known_resource(config: StackConfig, resource: str) -> bool:
    """An API app, or one of the Azure resources the config lists (trailing slash optional)."""
    wanted = resource.rstrip("/").lower()
    return config.api_for(resource) is not None or wanted in {r.rstrip("/").lower() for r in config.other_resources}


def token_for(state: StackState, query: Mapping[str, str], id_params: Mapping[str, str], *, endpoint: str) -> Grant:
    """Pick the identity, check the resource and hand out the platform's token, or raise Refusal."""
    resource = query.get("resource", "")
    if not resource:
        raise Refusal(Reason.MISSING_RESOURCE)
    identity = select_identity(state.config, query, id_params)
    if not is_known_resource(state.config, resource):
        raise Refusal(Reason.UNKNOWN_RESOURCE, resource)
    grant, minted = state.platform.grant(identity, resource)
    state.stats.count("identity", "tokens_issued")
    state.stats.count("identity", "tokens_minted" if minted else "tokens_from_platform_cache")
    state.stats.count("identity", "by_client_id", identity.client_id)
    _log.info("%s token %s to identity '%s' and resource %s", endpoint,
              "minted and served" if minted else "served from the platform cache", identity.name, resource)
    return grant


def reason_phrase(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)
