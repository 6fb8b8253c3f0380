"""State shared by the stand-in services: counters, received telemetry, faults."""

from __future__ import annotations

import copy
import secrets
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from devstack.config import StackConfig
from devstack.entra import TokenIssuer
from devstack.faults import FaultBoard
from devstack.identity.platform import PlatformTokenCache, RoleAssignments
from devstack.tls import LocalTls


class Stats:
    """Request counters read by `GET {control_url}/stats`. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[str, dict[str, Any]] = {}

    def count(self, service: str, key: str, sub: str | None = None, amount: int = 1) -> None:
        """Add to `service.key`, or to `service.key.sub` for a breakdown such as by_status."""
        with self._lock:
            counters = self._counters.setdefault(service, {})
            if sub is None:
                counters[key] = counters.get(key, 0) + amount
            else:
                breakdown = counters.setdefault(key, {})
                breakdown[sub] = breakdown.get(sub, 0) + amount

    def get(self, service: str, key: str, sub: str | None = None) -> int:
        with self._lock:
            value = self._counters.get(service, {}).get(key, {} if sub else 0)
            return value.get(sub, 0) if sub is not None else value

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._counters)

    def reset(self) -> None:
        with self._lock:
            self._counters.clear()


@dataclass
class StackState:
    """Everything the services share. One per running stack."""

    config: StackConfig
    issuer: TokenIssuer
    roles: RoleAssignments
    platform: PlatformTokenCache
    identity_header: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    subscription_key: str = field(default_factory=lambda: secrets.token_hex(16))
    faults: FaultBoard = field(default_factory=FaultBoard)
    stats: Stats = field(default_factory=Stats)
    telemetry: list[dict[str, Any]] = field(default_factory=list)
    endpoints: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    tls: LocalTls | None = None  # set by the stack when it starts the HTTPS services

    @classmethod
    def create(cls, config: StackConfig) -> StackState:
        issuer = TokenIssuer(config)
        roles = RoleAssignments(config)
        state = cls(config=config, issuer=issuer, roles=roles, platform=PlatformTokenCache(issuer, roles))
        if config.subscription_key:
            state.subscription_key = config.subscription_key
        return state


# The key under which a service's aiohttp application holds the stack's state.
STATE = web.AppKey("state", StackState)
