"""APIM policy statements: what the XML reader (`reader`) produces and the gateway runs.

One frozen dataclass per policy element the stand-in implements, the documents they
form, and scope composition: each section's `<base />` is replaced by the parent
scope's statements for that section (global -> API -> operation; products are not
modelled), as APIM does. With no global-policy.xml the stand-in uses APIM's default
global policy, which only forwards the request. Which element is which statement,
read and run by what, is in `registry`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from devstack.apim.errors import PolicyError
from devstack.apim.expressions import Expression

SECTIONS = ("inbound", "backend", "outbound", "on-error")
SCOPES = ("global", "api", "operation")

Value = str | Expression


@dataclass(frozen=True)
class Base:
    """`<base />`: the parent scope's statements for this section run here."""


@dataclass(frozen=True)
class RequiredClaim:
    name: str
    values: tuple[str, ...]
    match: str = "all"  # "all": every value must be present; "any": at least one
    separator: str | None = None  # splits a single string claim into values


@dataclass(frozen=True)
class IssuerSigningKey:
    """An `<issuer-signing-keys><key>`: RSA modulus/exponent (Base64url) or a Base64 symmetric key."""

    kid: str | None = None
    n: str | None = None
    e: str | None = None
    secret: bytes | None = None


@dataclass(frozen=True, kw_only=True)
class TokenCheck:
    """What validate-jwt and validate-azure-ad-token have in common."""

    header_name: str | None = None
    query_parameter_name: str | None = None
    token_value: Value | None = None
    failed_status: int = 401
    failed_message: str | None = None  # None: APIM's default message for the failure
    output_variable: str | None = None
    audiences: tuple[str, ...] = ()
    required_claims: tuple[RequiredClaim, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ValidateJwt(TokenCheck):
    require_scheme: str | None = None
    require_expiration_time: bool = True
    require_signed_tokens: bool = True
    clock_skew: int = 0
    openid_config_urls: tuple[str, ...] = ()
    signing_keys: tuple[IssuerSigningKey, ...] = ()
    issuers: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ValidateAzureAdToken(TokenCheck):
    tenant_id: str
    client_application_ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SetHeader:
    name: str
    exists_action: str = "override"
    values: tuple[Value, ...] = ()


@dataclass(frozen=True)
class SetQueryParameter:
    name: str
    exists_action: str = "override"
    values: tuple[Value, ...] = ()


@dataclass(frozen=True)
class ForwardRequest:
    timeout: int = 300  # seconds to wait for the backend's response headers
    follow_redirects: bool = False


@dataclass(frozen=True)
class SetVariable:
    name: str
    value: Value


@dataclass(frozen=True)
class SetStatus:
    code: int
    reason: str


@dataclass(frozen=True)
class SetBody:
    """The request's body in inbound and backend, the response's in outbound, on-error and return-response."""

    value: Value


@dataclass(frozen=True)
class When:
    condition: Expression  # a Boolean expression
    statements: tuple[Statement, ...]


@dataclass(frozen=True)
class Choose:
    """The first `<when>` whose condition is true runs, else `<otherwise>`."""

    whens: tuple[When, ...]
    otherwise: tuple[Statement, ...] = ()


@dataclass(frozen=True)
class ReturnResponse:
    """Stops the pipeline and answers with a response built by its set-status, set-header and set-body."""

    statements: tuple[Statement, ...]


@dataclass(frozen=True)
class AuthenticationManagedIdentity:
    """A token of the APIM service's managed identity for `resource`: into Authorization, or a variable."""

    resource: str
    client_id: str  # of a user-assigned identity of the service
    output_variable: str | None = None
    ignore_error: bool = False


Statement = (Base | ValidateJwt | ValidateAzureAdToken | SetHeader | SetQueryParameter | ForwardRequest | SetVariable
             | SetStatus | SetBody | Choose | ReturnResponse | AuthenticationManagedIdentity)


@dataclass(frozen=True)
class PolicyDocument:
    """One scope's policy: statements per section."""

    source: str
    sections: Mapping[str, tuple[Statement, ...]]


@dataclass(frozen=True)
class EffectivePolicy:
    """What runs for one operation once scopes are composed: no `<base />` left."""

    sections: Mapping[str, tuple[Statement, ...]]

    def __getitem__(self, section: str) -> tuple[Statement, ...]:
        return self.sections[section]


DEFAULT_GLOBAL_POLICY = PolicyDocument(
    source="APIM's default global policy",
    sections={"inbound": (), "backend": (ForwardRequest(),), "outbound": (), "on-error": ()},
)
INHERIT_ALL = PolicyDocument(source="no policy at this scope", sections={s: (Base(),) for s in SECTIONS})


def compose(*documents: PolicyDocument) -> EffectivePolicy:
    """Compose scopes, outermost (global) first."""
    effective: dict[str, tuple[Statement, ...]] = {s: () for s in SECTIONS}
    for document in documents:
        for section in SECTIONS:
            parent = effective[section]
            effective[section] = tuple(
                statement for item in document.sections[section]
                for statement in (parent if isinstance(item, Base) else (item,))
            )
    forwards = sum(isinstance(s, ForwardRequest) for s in effective["backend"])
    if forwards > 1:  # APIM allows one forward-request per effective policy
        sources = ", ".join(d.source for d in documents)
        raise PolicyError([f"{sources}: the composed <backend> section has {forwards} <forward-request> statements"])
    return EffectivePolicy(sections=effective)
