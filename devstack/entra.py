"""The Entra ID stand-in's signing keys and the access tokens it mints.

Tokens carry the claims Entra ID puts in a managed identity's app-only token for
an API (v1 or v2 shape, per the API app's accepted token version) and are signed
RS256 by the current key of a `KeySet`. The key set publishes two keys, each with
an `x5c` certificate and its `x5t` thumbprint and no `alg`, as Entra's JWKS does,
and can be rotated (`POST {control_url}/identity/rotate-signing-key`): the new
key signs from then on, the previous one stays published so tokens already
handed out stay valid until they expire.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from devstack.config import Identity, StackConfig

# The resource an identity asks for to send telemetry (Application Insights ingestion).
MONITOR_RESOURCE = "https://monitor.azure.com"


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _b64url_uint(value: int) -> str:
    return _b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def v1_issuer(tenant_id: str) -> str:
    return f"https://sts.windows.net/{tenant_id}/"


def v2_issuer(tenant_id: str) -> str:
    return f"https://login.microsoftonline.com/{tenant_id}/v2.0"


def _self_signed(key: rsa.RSAPrivateKey) -> x509.Certificate:
    """A certificate for the key, as Entra publishes one per signing key in `x5c`."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.accesscontrol.windows.net")])
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256()))


@dataclass(frozen=True)
class EntraSigningKey:
    """An RSA key and its certificate; `kid` is the certificate's SHA-1 thumbprint, as in Entra."""

    private_key: rsa.RSAPrivateKey
    certificate_der: bytes

    @classmethod
    def generate(cls) -> EntraSigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return cls(private_key=key, certificate_der=_self_signed(key).public_bytes(serialization.Encoding.DER))

    @property
    def kid(self) -> str:
        return _b64url(hashlib.sha1(self.certificate_der).digest())  # noqa: S324 - a thumbprint, not security

    def jwk(self, issuer: str | None) -> dict[str, Any]:
        """The key as Entra's JWKS lists it: no `alg`; the v2 key set adds `issuer`."""
        numbers = self.private_key.public_key().public_numbers()
        jwk: dict[str, Any] = {
            "kty": "RSA",
            "use": "sig",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
            "x5c": [base64.b64encode(self.certificate_der).decode("ascii")],
        }
        if issuer is not None:
            jwk["issuer"] = issuer
        return jwk


class KeySet:
    """The published signing keys: the current one first, then the previous one. Thread-safe."""

    def __init__(self, keys: Sequence[EntraSigningKey] | None = None) -> None:
        self._lock = threading.Lock()
        self._keys = tuple(keys) if keys else (EntraSigningKey.generate(), EntraSigningKey.generate())

    @property
    def current(self) -> EntraSigningKey:
        with self._lock:
            return self._keys[0]

    @property
    def published(self) -> tuple[EntraSigningKey, ...]:
        with self._lock:
            return self._keys

    def rotate(self) -> EntraSigningKey:
        """Sign with a new key from now on; keep the current one published, drop the older."""
        new = EntraSigningKey.generate()
        with self._lock:
            self._keys = (new, self._keys[0])
        return new

    def jwks(self, issuer: str | None) -> dict[str, Any]:
        return {"keys": [key.jwk(issuer) for key in self.published]}


class TokenIssuer:
    """Mints access tokens for the identities in a StackConfig."""

    def __init__(self, config: StackConfig, keys: KeySet | None = None) -> None:
        self.config = config
        self.keys = keys or KeySet()

    def jwks(self) -> dict[str, Any]:
        return self.keys.jwks(v2_issuer(self.config.tenant_id))

    def token_version(self, resource: str) -> int:
        """The API app's accepted token version; Azure's own resources issue v1 tokens."""
        api = self.config.api_for(resource)
        return api.accepted_token_version if api is not None else 1

    def claims_for(self, identity: Identity, resource: str, *, roles: Sequence[str] | None = None,
                   now: int | None = None) -> dict[str, Any]:
        """Claims of an app-only token for `identity` to call `resource`, minted at `now`.

        `iat` and `nbf` are set back by `token_backdate_seconds` (clock skew), as Entra does;
        `exp` is `token_lifetime_seconds` after `now`. `roles` defaults to the identity's
        configured app roles (the stand-in passes the runtime assignments).
        """
        now = int(time.time()) if now is None else now
        config = self.config
        tenant = config.tenant_id
        api = config.api_for(resource)
        is_api = api is not None
        roles = identity.roles if roles is None else roles
        roles = [r for r in roles if api is not None and r in api.app_roles]
        issued = now - config.token_backdate_seconds
        claims: dict[str, Any] = {
            "iat": issued,
            "nbf": issued,
            "exp": now + config.token_lifetime_seconds,
            "aio": uuid.uuid4().hex,
            "idp": v1_issuer(tenant),
            "oid": identity.principal_id,
            "rh": "0.devstack.",
            "sub": identity.principal_id,
            "tid": tenant,
            "uti": uuid.uuid4().hex[:22],
            "xms_mirid": identity.resource_id,
        }
        if api is None or "idtyp" in api.optional_claims:
            # An optional claim: in a custom API's token only when its app registration asks for it;
            # Azure's own resources ask (azure-identity's recorded IMDS token for ARM carries it).
            claims["idtyp"] = "app"
        if is_api and roles:
            claims["roles"] = list(roles)
        if self.token_version(resource) == 2:
            assert api is not None  # only an API app accepts v2 tokens here
            claims.update(aud=api.client_id, iss=v2_issuer(tenant), azp=identity.client_id, azpacr="2", ver="2.0")
        else:
            # A v1 token's audience is the resource exactly as it was requested.
            claims.update(aud=resource, iss=v1_issuer(tenant), appid=identity.client_id, appidacr="2", ver="1.0")
        return claims

    def sign(self, claims: dict[str, Any], key: EntraSigningKey | None = None) -> str:
        key = key or self.keys.current
        headers: dict[str, Any] = {"typ": "JWT", "kid": key.kid}
        if claims.get("ver") == "1.0":
            headers["x5t"] = key.kid  # Entra sends x5t in v1 token headers only
        return jwt.encode(claims, key.private_key, algorithm="RS256", headers=headers)

    def issue(self, identity: Identity, resource: str, *,
              roles: Sequence[str] | None = None) -> tuple[str, dict[str, Any]]:
        """Return (token, claims) for `identity` calling `resource`."""
        claims = self.claims_for(identity, resource, roles=roles)
        return self.sign(claims), claims
