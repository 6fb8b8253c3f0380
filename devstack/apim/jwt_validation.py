"""The token checks of validate-jwt and validate-azure-ad-token.

PyJWT checks signatures; the claim checks are written out here so each failure
carries APIM's reason code and default message (the policy's
failed-validation-error-message replaces the message when set). Algorithms are the
ones APIM documents, and each key type only ever verifies its own algorithms: an
RSA key is never used as an HMAC secret, and `alg: none` is refused unless the
policy says require-signed-tokens="false".
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.algorithms import RSAAlgorithm

from devstack.apim.expressions import Expression, ExpressionContext, Jwt
from devstack.apim.openid import MetadataError, MetadataSource
from devstack.apim.statements import IssuerSigningKey, RequiredClaim, TokenCheck, ValidateAzureAdToken, ValidateJwt
from devstack.entra import v1_issuer, v2_issuer

log = logging.getLogger(__name__)

ASYMMETRIC_ALGORITHMS = ("RS256", "RS512", "PS256")
SYMMETRIC_ALGORITHMS = ("HS256", "HS384", "HS512")
# PyJWT checks each segment of a token character by character in Python (0.2 ms a token on a slow
# machine), and the stack checks the same few tokens on every call: at API and operation scope, then
# again as the sample backend. Parsing and signature checks depend on the token and the key alone, so
# their results are remembered, this many of each; a failure is never remembered (lru_cache keeps no
# exceptions). Lifetime, issuer, audience and claims are checked on every call.
_REMEMBERED = 256

# A verification key as the memo holds it: an RSA key's (n, e) in Base64url, or a symmetric key's bytes.
KeyMaterial = tuple[str, str] | bytes


class TokenRejected(Exception):
    """The token failed a check; `reason` is APIM's code (context.LastError.Reason)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class TokenRules:
    """What one policy statement checks, resolved for this stand-in."""

    audiences: tuple[str, ...] = ()
    issuers: tuple[str, ...] = ()
    metadata_urls: tuple[str, ...] = ()
    signing_keys: tuple[IssuerSigningKey, ...] = ()
    required_claims: tuple[RequiredClaim, ...] = ()
    client_application_ids: tuple[str, ...] = ()
    require_scheme: str | None = None
    require_expiration_time: bool = True
    require_signed_tokens: bool = True
    clock_skew: int = 0


def rules_for(statement: ValidateJwt | ValidateAzureAdToken, entra_config_url: str) -> TokenRules:
    """The checks a statement implies. validate-azure-ad-token trusts the tenant's Entra
    discovery document (here: the identity stand-in's) and both token versions' issuers."""
    if isinstance(statement, ValidateJwt):
        return TokenRules(
            audiences=statement.audiences, issuers=statement.issuers, metadata_urls=statement.openid_config_urls,
            signing_keys=statement.signing_keys, required_claims=statement.required_claims,
            require_scheme=statement.require_scheme, require_expiration_time=statement.require_expiration_time,
            require_signed_tokens=statement.require_signed_tokens, clock_skew=statement.clock_skew,
        )
    tenant = statement.tenant_id.lower()  # Entra writes tenant IDs in lower case
    return TokenRules(
        audiences=statement.audiences, issuers=(v1_issuer(tenant), v2_issuer(tenant)),
        metadata_urls=(entra_config_url,), required_claims=statement.required_claims,
        client_application_ids=statement.client_application_ids, require_scheme="Bearer",
    )


def extract_token(check: TokenCheck, rules: TokenRules, headers: Mapping[str, str], query: Mapping[str, str],
                  context: ExpressionContext) -> str:
    """The token, from wherever the policy says it is."""
    if check.header_name:
        value = headers.get(check.header_name, "").strip()
        if check.header_name.lower() == "authorization":
            scheme, _, rest = value.partition(" ")
            if rest and (not rules.require_scheme or scheme.lower() == rules.require_scheme.lower()):
                value = rest.strip()
            elif rules.require_scheme:
                value = ""  # no scheme, or another one: APIM finds no token
        # With another header the value is the bare token: APIM ignores require-scheme there.
    elif check.query_parameter_name:
        value = query.get(check.query_parameter_name, "").strip()
    elif isinstance(check.token_value, Expression):
        value = check.token_value.evaluate(context)
    else:
        value = check.token_value or ""
    if not value:
        raise TokenRejected("TokenNotPresent", "JWT not present.")
    return value


async def validate(token: str, rules: TokenRules, keys: MetadataSource, *, now: float | None = None) -> Jwt:
    """Check `token` against `rules`; return it as APIM's `Jwt`, or raise TokenRejected."""
    try:
        header = dict(_unverified_header(token))  # a copy: the memo's own is never handed out
    except jwt.PyJWTError:
        raise TokenRejected("JwtInvalid", "Invalid JWT.") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str):
        raise TokenRejected("JwtInvalid", "Invalid JWT.")
    if algorithm.lower() == "none":
        if rules.require_signed_tokens:
            raise TokenRejected("TokenSignatureInvalid", "The token is not signed. Access denied.")
        claims = _payload(jwt.api_jws.decode_complete(token, options={"verify_signature": False})["payload"])
    else:
        claims = await _verified_claims(token, header, algorithm, rules, keys)
    now = time.time() if now is None else now
    _check_lifetime(claims, rules, now)
    _check_issuer(claims, rules.issuers + await _metadata_issuers(rules, keys))
    _check_audience(claims, rules.audiences)
    _check_client_application(claims, rules.client_application_ids)
    _check_required_claims(claims, rules.required_claims)
    return Jwt(header=header, claims=claims)


# --- signature ----------------------------------------------------------------

async def _verified_claims(token: str, header: Mapping[str, Any], algorithm: str, rules: TokenRules,
                           keys: MetadataSource) -> dict[str, Any]:
    kid = header.get("kid")
    candidates = await _candidate_keys(algorithm, kid if isinstance(kid, str) else None, rules, keys)
    if not candidates:
        raise TokenRejected("TokenSignatureKeyNotFound",
                            f"Signature validation failed. Unable to match key: kid: '{kid}'. Access denied.")
    for key in candidates:
        try:
            payload = _signed_payload(token, algorithm, key)
        except jwt.InvalidSignatureError:
            continue
        except jwt.PyJWTError:
            raise TokenRejected("JwtInvalid", "Invalid JWT.") from None
        return _payload(payload)
    raise TokenRejected("TokenSignatureInvalid", "Signature validation failed. Access denied.")


async def _candidate_keys(algorithm: str, kid: str | None, rules: TokenRules,
                          keys: MetadataSource) -> list[KeyMaterial]:
    def wanted(key_id: object) -> bool:
        return kid is None or key_id is None or key_id == kid

    if algorithm in SYMMETRIC_ALGORITHMS:
        return [k.secret for k in rules.signing_keys if k.secret and wanted(k.kid)]
    if algorithm not in ASYMMETRIC_ALGORITHMS:
        raise TokenRejected("JwtInvalid", f"Signing algorithm '{algorithm}' is not supported. Access denied.")
    jwks: list[Mapping[str, Any]] = [{"n": k.n, "e": k.e} for k in rules.signing_keys
                                     if k.n and k.e and wanted(k.kid)]
    for url in rules.metadata_urls:
        try:
            metadata = await keys.get(url)
            matching = [k for k in metadata.keys if wanted(k.get("kid"))]
            if kid is not None and not matching:  # maybe the keys rolled over: refetch (rate-limited)
                metadata = await keys.get(url, refresh=True)
                matching = [k for k in metadata.keys if wanted(k.get("kid"))]
        except MetadataError as exc:
            log.warning("cannot get signing keys from %s: %s", url, exc)
            continue
        jwks.extend(k for k in matching if k.get("kty") == "RSA" and k.get("use", "sig") == "sig")
    candidates: list[KeyMaterial] = []
    for jwk in jwks:
        n, e = jwk.get("n"), jwk.get("e")
        try:
            if not isinstance(n, str) or not isinstance(e, str):
                raise ValueError("n and e must be strings")
            _rsa_key(n, e)
        except (jwt.InvalidKeyError, ValueError, TypeError):
            log.warning("ignoring an unreadable signing key (kid %s)", jwk.get("kid"))
            continue
        candidates.append((n, e))
    return candidates


@functools.lru_cache(maxsize=_REMEMBERED)
def _unverified_header(token: str) -> dict[str, Any]:
    return jwt.get_unverified_header(token)


@functools.lru_cache(maxsize=_REMEMBERED)
def _rsa_key(n: str, e: str) -> Any:
    """The public key of a JWK's modulus and exponent (any other member of the JWK is not the key's)."""
    return RSAAlgorithm.from_jwk({"kty": "RSA", "n": n, "e": e})


@functools.lru_cache(maxsize=_REMEMBERED)
def _signed_payload(token: str, algorithm: str, key: KeyMaterial) -> bytes:
    """The payload of `token` when `key` verifies its signature by `algorithm`; else PyJWT's error."""
    verifier = key if isinstance(key, bytes) else _rsa_key(*key)
    payload: bytes = jwt.api_jws.decode_complete(token, key=verifier, algorithms=[algorithm])["payload"]
    return payload


def _payload(raw: bytes) -> dict[str, Any]:
    try:
        claims = json.loads(raw)
    except ValueError:
        raise TokenRejected("JwtInvalid", "Invalid JWT.") from None
    if not isinstance(claims, dict):
        raise TokenRejected("JwtInvalid", "Invalid JWT.")
    return claims


async def _metadata_issuers(rules: TokenRules, keys: MetadataSource) -> tuple[str, ...]:
    issuers = []
    for url in rules.metadata_urls:
        try:
            issuer = (await keys.get(url)).issuer
        except MetadataError:
            continue
        if issuer:
            issuers.append(issuer)
    return tuple(issuers)


# --- claims -------------------------------------------------------------------

def _number(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TokenRejected("JwtInvalid", f"Invalid JWT: '{name}' is not a number.")
    return float(value)


def _check_lifetime(claims: Mapping[str, Any], rules: TokenRules, now: float) -> None:
    expires, not_before = _number(claims, "exp"), _number(claims, "nbf")
    if expires is None and rules.require_expiration_time:
        raise TokenRejected("JwtInvalid", "Lifetime validation failed. The token is missing an Expiration Time. "
                            "Access denied.")
    if expires is not None and now > expires + rules.clock_skew:
        raise TokenRejected("TokenExpired", "Lifetime validation failed. The token is expired. Access denied.")
    if not_before is not None and now + rules.clock_skew < not_before:
        raise TokenRejected("JwtInvalid", "Lifetime validation failed. The token is not yet valid. Access denied.")


def _check_issuer(claims: Mapping[str, Any], issuers: tuple[str, ...]) -> None:
    if issuers and claims.get("iss") not in issuers:
        raise TokenRejected("TokenIssuerNotAllowed", "Issuer validation failed. Access denied.")


def _check_audience(claims: Mapping[str, Any], audiences: tuple[str, ...]) -> None:
    if not audiences:
        return
    audience = claims.get("aud")
    presented = audience if isinstance(audience, list) else [audience]
    if not any(isinstance(a, str) and a in audiences for a in presented):
        raise TokenRejected("TokenAudienceNotAllowed", "Audience validation failed. Access denied.")


def _check_client_application(claims: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    if not allowed:
        return
    client = claims.get("azp") or claims.get("appid")  # v2.0 / v1.0 name of the calling app
    if not isinstance(client, str) or client.lower() not in {a.lower() for a in allowed}:
        # Reason code is ours: APIM does not document one for this check.
        raise TokenRejected("TokenClientApplicationNotAllowed",
                            "Client application ID validation failed. Access denied.")


def _claim_values(claims: Mapping[str, Any], claim: RequiredClaim) -> list[str]:
    value = claims.get(claim.name)
    items = value if isinstance(value, list) else ([] if value is None else [value])
    values = [item if isinstance(item, str) else json.dumps(item) for item in items]
    if claim.separator:
        values = [part.strip() for item in values for part in item.split(claim.separator)]
    return values


def _check_required_claims(claims: Mapping[str, Any], required: tuple[RequiredClaim, ...]) -> None:
    missing = [claim.name for claim in required if not _claim_values(claims, claim)]
    if missing:
        raise TokenRejected("TokenClaimNotFound",
                            f"JWT token is missing the following claims: {', '.join(missing)}. Access denied.")
    for claim in required:
        present = _claim_values(claims, claim)
        test = all if claim.match == "all" else any
        if not test(value in present for value in claim.values):
            raise TokenRejected("TokenClaimValueNotAllowed",
                                f"Claim {claim.name} value of {','.join(present)} is not allowed. Access denied.")
