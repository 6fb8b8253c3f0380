"""Access tokens for one identity and scope: cached, fetched once, refreshed early.

azure-identity caches tokens, but concurrent cold calls each go to the identity
endpoint; a burst of invocations on a new instance would send one token request
per invocation. `TokenSource` lets exactly one fetch run at a time and shares its
result (a token, or the error it ended in), and serves the current token while a
refresh is in flight.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import jwt
from azure.core.credentials import AccessTokenInfo
from azure.core.credentials_async import AsyncTokenCredential
from azure.identity.aio import ManagedIdentityCredential

from shared import telemetry
from shared.errors import AppError, map_token_exception

logger = logging.getLogger(__name__)

# Refresh this long before expiry (at most half the lifetime) when the credential gives no refresh_on.
REFRESH_MARGIN_SECONDS = 300
# Never use a token that expires sooner than this: it could expire in flight.
MIN_REMAINING_SECONDS = 30

NON_SECRET_CLAIMS = ("aud", "iss", "tid", "roles", "appid", "azp", "oid", "idtyp", "ver", "exp", "nbf", "iat")


def describe_token(token: str) -> dict[str, Any]:
    """The token's non-secret claims, unverified: for hints and health output only.

    APIM validates the signature; we only read what we were given to explain a refusal.
    """
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return {}
    return {name: claims[name] for name in NON_SECRET_CLAIMS if name in claims}


class TokenSource:
    """Tokens for (credential, scope), with one fetch in flight and early refresh."""

    def __init__(self, credential: AsyncTokenCredential, scope: str, *, client_id: str | None,
                 clock: Callable[[], float] = time.time) -> None:
        self.credential = credential
        self.scope = scope
        self.client_id = client_id or "default"
        self._clock = clock
        self._token: AccessTokenInfo | None = None
        self._fetched_at = 0.0
        self._lock = asyncio.Lock()
        self._fetches_ended = 0  # so a waiter for the lock can tell that a fetch ended meanwhile
        self._failure: AppError | None = None  # how the last fetch failed, if it did

    async def get(self) -> AccessTokenInfo:
        """A token valid for at least MIN_REMAINING_SECONDS."""
        token = self._token
        if token and not self._needs_refresh(token):
            telemetry.record_token(self.client_id, self.scope, source="cache", token=token)
            return token
        if token and self._usable(token) and self._lock.locked():
            # Someone is already refreshing; the current token is still good.
            telemetry.record_token(self.client_id, self.scope, source="cache", token=token)
            return token
        ended = self._fetches_ended
        async with self._lock:
            token = self._token
            if token and not self._needs_refresh(token):
                telemetry.record_token(self.client_id, self.scope, source="cache", token=token)
                return token
            self._raise_if_failed_since(ended)
            return await self._fetch(fallback=token)

    async def renew(self, rejected: str) -> AccessTokenInfo:
        """A token other than `rejected` if one can be had (after APIM said 401)."""
        ended = self._fetches_ended
        async with self._lock:
            if self._token and self._token.token != rejected:
                return self._token  # another call already renewed it
            self._raise_if_failed_since(ended)
            self._token = None
            return await self._fetch(fallback=None, bypass_cache=True)

    async def _fetch(self, *, fallback: AccessTokenInfo | None, bypass_cache: bool = False) -> AccessTokenInfo:
        options: dict[str, Any] = {}
        if bypass_cache and isinstance(self.credential, ManagedIdentityCredential):
            options["claims"] = ""  # any claims value makes azure-identity skip its own cache
        with telemetry.token_span(self.client_id, self.scope) as span:
            try:
                token = await self.credential.get_token_info(self.scope, options=options or None)  # type: ignore[arg-type]
            except Exception as exc:
                error: AppError | None = map_token_exception(exc)
            else:
                error = None
            finally:
                self._fetches_ended += 1
            # Raised here, outside the except block, so the library's exception (whose text may
            # quote the endpoint's answer) is not even chained to ours as __context__.
            if error is not None:
                if fallback and self._usable(fallback):
                    logger.warning("Token refresh for identity %s failed (%s); using the current token.",
                                   self.client_id, error.message)
                    span.set_outcome("stale", fallback)
                    return fallback
                span.set_failure(error)
                self._failure = error
                raise error
            span.set_outcome("success", token)
        self._token, self._fetched_at, self._failure = token, self._clock(), None
        return token

    def _raise_if_failed_since(self, ended: int) -> None:
        """Share the failure of a fetch that ended while we waited for the lock.

        Without this, every caller of a burst would retry in turn once the lock is free:
        against a down or slow identity endpoint that is one full azure-identity retry
        cycle per queued invocation, and the last one waits for all of them.
        """
        if self._fetches_ended != ended and self._failure is not None:
            raise self._failure.with_traceback(None)

    def _needs_refresh(self, token: AccessTokenInfo) -> bool:
        now = self._clock()
        margin = min(REFRESH_MARGIN_SECONDS, (token.expires_on - self._fetched_at) / 2)
        refresh_at = token.refresh_on or (token.expires_on - margin)
        return now >= refresh_at or not self._usable(token)

    def _usable(self, token: AccessTokenInfo) -> bool:
        return token.expires_on - self._clock() > MIN_REMAINING_SECONDS
