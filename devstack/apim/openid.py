"""Signing keys and issuers from OpenID Connect discovery documents.

`HttpMetadataSource` is what the gateway uses: it fetches the configuration and its
JWKS over HTTP and caches them as APIM does for validate-jwt: kept for an hour
(MicrosoftDocs/azure-docs#93033), and a token naming a key that is not in the cache
triggers a refetch at most once every five minutes. APIM does not document that
interval; five minutes is the default of Microsoft.IdentityModel's
ConfigurationManager (RefreshInterval), the .NET library that does this job.
`StaticMetadataSource` serves fixed documents, so token validation can be tested
without an identity service.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import aiohttp

log = logging.getLogger(__name__)

CACHE_SECONDS = 3600
MIN_REFRESH_SECONDS = 300
FETCH_TIMEOUT = aiohttp.ClientTimeout(total=10)


class MetadataError(RuntimeError):
    """The OpenID configuration or its key set could not be fetched or read."""


@dataclass(frozen=True)
class OpenIdMetadata:
    issuer: str | None
    keys: tuple[Mapping[str, Any], ...]  # JWKs


class MetadataSource(Protocol):
    async def get(self, url: str, *, refresh: bool = False) -> OpenIdMetadata:
        """The metadata at `url`; `refresh` asks for a refetch (the source may decline)."""
        ...


class StaticMetadataSource:
    """Fixed metadata per configuration URL (for tests)."""

    def __init__(self, documents: Mapping[str, OpenIdMetadata]) -> None:
        self.documents = dict(documents)

    async def get(self, url: str, *, refresh: bool = False) -> OpenIdMetadata:
        try:
            return self.documents[url]
        except KeyError:
            raise MetadataError(f"no OpenID configuration at {url}") from None


@dataclass
class _Entry:
    metadata: OpenIdMetadata
    fetched_at: float


@dataclass
class HttpMetadataSource:
    """Fetches and caches OpenID configurations and their JWKS over HTTP."""

    session: Callable[[], aiohttp.ClientSession]
    clock: Callable[[], float] = time.monotonic
    min_refresh_seconds: float = MIN_REFRESH_SECONDS
    _cache: dict[str, _Entry] = field(default_factory=dict)
    _locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    async def get(self, url: str, *, refresh: bool = False) -> OpenIdMetadata:
        async with self._locks.setdefault(url, asyncio.Lock()):  # one fetch at a time per URL
            entry = self._cache.get(url)
            if entry is not None:
                age = self.clock() - entry.fetched_at
                if age < CACHE_SECONDS and not (refresh and age >= self.min_refresh_seconds):
                    return entry.metadata
            try:
                metadata = await self._fetch(url)
            except MetadataError as exc:
                if entry is None:
                    raise
                log.warning("keeping cached OpenID metadata for %s: %s", url, exc)
                return entry.metadata
            self._cache[url] = _Entry(metadata, self.clock())
            return metadata

    async def _fetch(self, url: str) -> OpenIdMetadata:
        config = await self._get_json(url)
        jwks_uri = config.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise MetadataError(f"{url} has no jwks_uri")
        jwks = await self._get_json(jwks_uri)
        keys = jwks.get("keys")
        if not isinstance(keys, list):
            raise MetadataError(f"{jwks_uri} has no 'keys' list")
        issuer = config.get("issuer")
        return OpenIdMetadata(issuer=issuer if isinstance(issuer, str) else None,
                              keys=tuple(k for k in keys if isinstance(k, dict)))

    async def _get_json(self, url: str) -> dict[str, Any]:
        try:
            async with self.session().get(url, timeout=FETCH_TIMEOUT) as response:
                if response.status != 200:
                    raise MetadataError(f"GET {url} answered {response.status}")
                document = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise MetadataError(f"GET {url} failed: {exc!r}") from exc
        if not isinstance(document, dict):
            raise MetadataError(f"{url} is not a JSON object")
        return document
