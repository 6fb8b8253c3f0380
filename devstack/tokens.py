"""Signing keys and Entra-shaped app-only access tokens.

Tokens carry the claims Entra ID puts in a managed identity's token for a custom
API (v1 or v2 shape, per the API app's accepted token version) and are signed
RS256 with a key published at the stand-in's JWKS endpoint.
"""

from __future__ import annotations

import base64
import hashlib
import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from devstack.config import Identity, StackConfig


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def v1_issuer(tenant_id: str) -> str:
    return f"https://sts.windows.net/{tenant_id}/"


def v2_issuer(tenant_id: str) -> str:
    return f"https://login.microsoftonline.com/{tenant_id}/v2.0"


@dataclass
class SigningKey:
    """An RSA key with the `kid` and `x5t` Entra would publish for it."""

    private_key: rsa.RSAPrivateKey
    kid: str

    @classmethod
    def generate(cls) -> SigningKey:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = key.public_key().public_numbers()
        digest = hashlib.sha1(numbers.n.to_bytes(256, "big")).digest()  # noqa: S324 - a key id, not security
        kid = base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
        return cls(private_key=key, kid=kid)

    def jwk(self, issuer: str) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "x5t": self.kid,
            "n": _b64url_uint(numbers.n),
            "e": _b64url_uint(numbers.e),
            "issuer": issuer,
        }


class TokenIssuer:
    """Mints access tokens for the identities in a StackConfig."""

    def __init__(self, config: StackConfig, key: SigningKey | None = None) -> None:
        self.config = config
        self.key = key or SigningKey.generate()

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.key.jwk(v2_issuer(self.config.tenant_id))]}

    def claims_for(self, identity: Identity, resource: str, *, now: int | None = None,
                   lifetime: int | None = None) -> dict[str, Any]:
        """Claims of an app-only token for `identity` to call `resource`."""
        now = int(time.time()) if now is None else now
        lifetime = self.config.token_lifetime_seconds if lifetime is None else lifetime
        tenant = self.config.tenant_id
        api = self.config.api
        is_api = api.matches(resource)
        version = api.accepted_token_version if is_api else 1
        claims: dict[str, Any] = {
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "aio": uuid.uuid4().hex,
            "idp": v1_issuer(tenant),
            "idtyp": "app",
            "oid": identity.principal_id,
            "rh": "0.devstack.",
            "sub": identity.principal_id,
            "tid": tenant,
            "uti": uuid.uuid4().hex[:22],
            "xms_mirid": identity.resource_id,
        }
        if is_api and identity.roles:
            claims["roles"] = list(identity.roles)
        if version == 2:
            claims.update(aud=api.client_id, iss=v2_issuer(tenant), azp=identity.client_id,
                          azpacr="2", ver="2.0")
        else:
            aud = api.app_id_uri if is_api else resource.rstrip("/")
            claims.update(aud=aud, iss=v1_issuer(tenant), appid=identity.client_id,
                          appidacr="2", ver="1.0")
        return claims

    def sign(self, claims: dict[str, Any]) -> str:
        headers = {"typ": "JWT", "kid": self.key.kid, "x5t": self.key.kid}
        return jwt.encode(claims, self.key.private_key, algorithm="RS256", headers=headers)

    def issue(self, identity: Identity, resource: str, *, lifetime: int | None = None) -> tuple[str, dict[str, Any]]:
        """Return (token, claims) for `identity` calling `resource`."""
        claims = self.claims_for(identity, resource, lifetime=lifetime)
        return self.sign(claims), claims
