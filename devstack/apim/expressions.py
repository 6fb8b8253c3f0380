"""Policy expressions: the exact few our policy files use, and nothing else.

Real APIM compiles the C# inside `@(...)` and `@{...}`. The stand-in does not
interpret C#: it knows an explicit list of expression texts (compared with runs of
whitespace collapsed) and, for each, a Python function that does what the C# does.
Any other expression makes the stand-in refuse to start. Why not a small C#
interpreter: it would be bigger than the rest of the gateway and could still
disagree with APIM without anyone noticing; an exact list cannot drift silently.
To use a new expression in infra/apim, add its text and its Python twin here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

# Name of the variable the API policy's validate-azure-ad-token fills (output-token-variable-name).
CALLER_TOKEN_VARIABLE = "caller-token"  # noqa: S105 - a variable name, not a secret


class ExpressionEvaluationError(RuntimeError):
    """An expression failed at run time (APIM: ExpressionValueEvaluationFailure, a 500)."""


@dataclass(frozen=True)
class Jwt:
    """What APIM's `Jwt` type offers an expression: the validated token's header and claims."""

    header: Mapping[str, Any]
    claims: Mapping[str, Any]

    def claim_values(self, name: str) -> list[str]:
        value = self.claims.get(name)
        if value is None:
            return []
        items = value if isinstance(value, list) else [value]
        return [item if isinstance(item, str) else json.dumps(item) for item in items]

    def get_value_or_default(self, name: str, default: str) -> str:
        """`Jwt.Claims.GetValueOrDefault(name, default)`: the values comma-separated, or `default`."""
        values = self.claim_values(name)
        return ",".join(values) if values else default


class ExpressionContext(Protocol):
    """The part of APIM's `context` our expressions read."""

    variables: dict[str, Any]


@dataclass(frozen=True)
class Expression:
    source: str
    evaluate: Callable[[ExpressionContext], str]


def _variable_jwt(context: ExpressionContext, name: str) -> Jwt:
    token = context.variables.get(name)
    if not isinstance(token, Jwt):  # C#'s (Jwt)context.Variables[name] would throw here
        raise ExpressionEvaluationError(f'context.Variables["{name}"] holds no validated token')
    return token


def _caller_client_id(context: ExpressionContext) -> str:
    # v2.0 tokens name the calling app in `azp`, v1.0 tokens in `appid`.
    jwt = _variable_jwt(context, CALLER_TOKEN_VARIABLE)
    return jwt.get_value_or_default("azp", jwt.get_value_or_default("appid", ""))


def _caller_roles(context: ExpressionContext) -> str:
    return _variable_jwt(context, CALLER_TOKEN_VARIABLE).get_value_or_default("roles", "")


def _normalize(text: str) -> str:
    return " ".join(text.split())


_KNOWN: dict[str, Callable[[ExpressionContext], str]] = {
    _normalize(
        '@{ var jwt = (Jwt)context.Variables["caller-token"]; '
        'return jwt.Claims.GetValueOrDefault("azp", jwt.Claims.GetValueOrDefault("appid", "")); }'
    ): _caller_client_id,
    _normalize('@(((Jwt)context.Variables["caller-token"]).Claims.GetValueOrDefault("roles", ""))'): _caller_roles,
}


def is_expression(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith(("@(", "@{"))


def compile_expression(text: str) -> Expression | None:
    """The stand-in's version of an expression, or None if it does not know this one."""
    evaluate = _KNOWN.get(_normalize(text))
    return Expression(source=text.strip(), evaluate=evaluate) if evaluate else None


def known_expressions() -> list[str]:
    return list(_KNOWN)
