"""Policy expressions: the exact few our policy files use, and nothing else.

Real APIM compiles the C# inside `@(...)` and `@{...}`. The stand-in does not
interpret C#: it knows an explicit list of expression texts and, for each, a Python
function that does what the C# does (its "twin"). Texts are compared with the
whitespace outside string literals normalised; two families take a string literal
(`context.Operation.Id == "..."`, `(string)context.Variables["..."]`). Any other
expression makes the stand-in refuse to start. Why not a small C# interpreter: it
would be bigger than the rest of the gateway and could still disagree with APIM
without anyone noticing; an exact list cannot drift silently. To use a new
expression in infra/, add its text and its twin here.

Where .NET and Python differ, the twins follow .NET: Newtonsoft's compact JSON,
`DateTime.ToString("o")`, `string.Trim()`'s whitespace, UTF-8 with U+FFFD for what
cannot be encoded. One difference stays (README, known differences): Newtonsoft reads
JSON more leniently (comments, single quotes) than Python's `json` does.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from multidict import CIMultiDict

# Name of the variable the API policy's validate-azure-ad-token fills (output-token-variable-name).
CALLER_TOKEN_VARIABLE = "caller-token"  # noqa: S105 - a variable name, not a secret
CALLER_HEADER = "X-Caller-Client-Id"


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
    """The part of APIM's `context` our expressions read (the gateway's Exchange)."""

    variables: dict[str, Any]
    headers: CIMultiDict[str]  # context.Request.Headers
    body: bytes  # context.Request.Body

    @property
    def operation_id(self) -> str: ...  # context.Operation.Id

    @property
    def matched_parameters(self) -> Mapping[str, str]: ...  # context.Request.MatchedParameters


Evaluate = Callable[[ExpressionContext], Any]


@dataclass(frozen=True)
class Expression:
    source: str
    twin: Evaluate

    def evaluate(self, context: ExpressionContext) -> Any:
        """Run the twin; any failure in it is the expression's failure, as an exception in C# is."""
        try:
            return self.twin(context)
        except ExpressionEvaluationError:
            raise
        except Exception as exc:
            raise ExpressionEvaluationError(f"{self.source[:60]!r} failed: {type(exc).__name__}") from exc


# --- what C# and .NET do, in Python -------------------------------------------------

# char.IsWhiteSpace, which string.Trim() uses (Python's str.strip also strips U+001C-U+001F).
_NET_WHITESPACE = "".join(chr(c) for c in (*range(0x09, 0x0E), 0x20, 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B),
                                            0x2028, 0x2029, 0x202F, 0x205F, 0x3000))


def _newtonsoft_json(value: Any) -> str:
    """`JToken.ToString(Formatting.None)`: compact; Newtonsoft also escapes U+0085, U+2028, U+2029."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("\u0085", "\\u0085").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _now_round_trip() -> str:
    """`DateTime.UtcNow.ToString("o")`: seven fractional digits and Z."""
    return f"{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%f}0Z"


def _variable(context: ExpressionContext, name: str) -> Any:
    if name not in context.variables:  # C#: KeyNotFoundException
        raise ExpressionEvaluationError(f'context.Variables["{name}"] is not set')
    return context.variables[name]


def _string_variable(context: ExpressionContext, name: str) -> str:
    value = _variable(context, name)
    if not isinstance(value, str):  # C#: InvalidCastException
        raise ExpressionEvaluationError(f'context.Variables["{name}"] is not a string')
    return value


def _header(context: ExpressionContext, name: str) -> str:
    """`context.Request.Headers.GetValueOrDefault(name, "")`: every value, comma-separated."""
    return ",".join(context.headers.getall(name, []))


def _matched_parameter(context: ExpressionContext, name: str) -> str:
    try:
        return context.matched_parameters[name]
    except KeyError:
        raise ExpressionEvaluationError(f'context.Request.MatchedParameters["{name}"] is not set') from None


# Newtonsoft's JsonSerializer refuses JSON nested deeper than this (MaxDepth, since 13.0).
_NEWTONSOFT_MAX_DEPTH = 64


def _body_as_jobject(context: ExpressionContext) -> dict[str, Any] | None:
    """`context.Request.Body.As<JObject>()` in a try/catch: the body's JSON object, else None."""
    if not context.body:
        return None
    # StreamReader: UTF-8 with or without a BOM; bytes that are not UTF-8 become U+FFFD.
    text = context.body.decode("utf-8-sig", errors="replace")
    if _nesting(text) > _NEWTONSOFT_MAX_DEPTH:
        return None
    try:
        # strict=False: Newtonsoft takes raw control characters inside strings; integers of any length
        # (BigInteger), where Python's str-to-int limit would refuse more than 4,300 digits.
        value = _loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _loads(text: str) -> Any:
    """JSON as Newtonsoft reads it, as far as Python's json can."""
    return json.loads(text, strict=False, parse_int=_big_int)


def _big_int(digits: str) -> int:
    """A JSON integer without Python's 4,300-digit limit (linear enough for the 1 MiB a body can hold)."""
    if len(digits) <= 4000:
        return int(digits)
    sign, digits = (-1, digits[1:]) if digits.startswith("-") else (1, digits)
    value = 0
    for start in range(0, len(digits), 4000):
        chunk = digits[start:start + 4000]
        value = value * 10 ** len(chunk) + int(chunk)
    return sign * value


def _int_text(value: int) -> str:
    """str(value) without Python's 4,300-digit limit."""
    if abs(value) < 10**4000:
        return str(value)
    sign, value = ("-", -value) if value < 0 else ("", value)
    chunks = []
    while value:
        value, chunk = divmod(value, 10**4000)
        chunks.append(chunk)
    return sign + str(chunks[-1]) + "".join(f"{chunk:04000d}" for chunk in reversed(chunks[:-1]))


def _nesting(text: str) -> int:
    """How deep the brackets of a JSON text go, those inside strings not counted: one pass."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _variable_jwt(context: ExpressionContext, name: str) -> Jwt:
    token = context.variables.get(name)
    if not isinstance(token, Jwt):  # C#'s (Jwt)context.Variables[name] would throw here
        raise ExpressionEvaluationError(f'context.Variables["{name}"] holds no validated token')
    return token


# --- the twins: infra/apim/api-policy.xml ---------------------------------------------

def _caller_client_id(context: ExpressionContext) -> str:
    # v2.0 tokens name the calling app in `azp`, v1.0 tokens in `appid`.
    jwt = _variable_jwt(context, CALLER_TOKEN_VARIABLE)
    return jwt.get_value_or_default("azp", jwt.get_value_or_default("appid", ""))


def _caller_roles(context: ExpressionContext) -> str:
    return _variable_jwt(context, CALLER_TOKEN_VARIABLE).get_value_or_default("roles", "")


def _backend_authorization(context: ExpressionContext) -> str:
    return "Bearer " + _string_variable(context, "backend-token")


# --- the twins: infra/sample-backend/policy.xml ---------------------------------------

def _status(context: ExpressionContext) -> str:
    return _newtonsoft_json({"status": "ok", "service": "orders-sample-backend", "time": _now_round_trip(),
                             "caller": _header(context, CALLER_HEADER)})


def _find_order(context: ExpressionContext) -> str:
    try:
        orders = _loads(_string_variable(context, "orders"))
    except ValueError:
        raise ExpressionEvaluationError("JArray.Parse: the orders variable is not JSON") from None
    if not isinstance(orders, list):
        raise ExpressionEvaluationError("JArray.Parse: the orders variable is not a JSON array")
    wanted = _matched_parameter(context, "id")
    for order in orders:
        if not isinstance(order, dict):  # o["id"] on a value that is not an object throws
            raise ExpressionEvaluationError("an order is not a JSON object")
        if order.get("id") == wanted:
            return _newtonsoft_json(order)
    return ""


def _order_found(context: ExpressionContext) -> bool:
    return len(_string_variable(context, "order")) > 0


def _order_not_found(context: ExpressionContext) -> str:
    order_id = _matched_parameter(context, "id")
    return _newtonsoft_json({"error": {"code": "OrderNotFound", "message": f"No order with id '{order_id}'."}})


def _not_json(context: ExpressionContext) -> bool:
    return not _header(context, "Content-Type").startswith("application/json")


def _order_problems(context: ExpressionContext) -> str:
    order = _body_as_jobject(context)
    if order is None:
        return _newtonsoft_json(["the body must be a JSON object"])
    problems = []
    item, quantity = order.get("item"), order.get("quantity")
    if not isinstance(item, str) or not item.strip(_NET_WHITESPACE):
        problems.append("'item' is required: a non-empty string")
    # JTokenType.Integer: a JSON number without fraction or exponent (Python: int, and bool is not one).
    if not isinstance(quantity, int) or isinstance(quantity, bool) or quantity < 1:
        problems.append("'quantity' is required: an integer of at least 1")
    return _newtonsoft_json(problems)


def _has_problems(context: ExpressionContext) -> bool:
    return _string_variable(context, "order-problems") != "[]"


def _invalid_order(context: ExpressionContext) -> str:
    problems = _loads(_string_variable(context, "order-problems"))
    return _newtonsoft_json({"error": {"code": "InvalidOrder", "message": "The order is not valid.",
                                       "problems": problems}})


def _new_order(context: ExpressionContext) -> str:
    order = _body_as_jobject(context)
    if order is None:  # the policy checks the body first; C# would throw a NullReferenceException
        raise ExpressionEvaluationError("the body is not a JSON object")
    quantity = order.get("quantity")
    # Python writes at most 4,300 digits of an int; Newtonsoft writes a BigInteger whole.
    placeholder = f"quantity-{uuid.uuid4()}" if isinstance(quantity, int) and not isinstance(quantity, bool) else None
    text = _newtonsoft_json({"id": str(uuid.uuid4()), "item": order.get("item"),
                             "quantity": placeholder if placeholder else quantity, "status": "received",
                             "created": _now_round_trip(), "created_by": _header(context, CALLER_HEADER)})
    return text.replace(f'"{placeholder}"', _int_text(quantity), 1) if placeholder else text


def _order_location(context: ExpressionContext) -> str:
    order = _loads(_string_variable(context, "order"))
    return "orders/" + str(order["id"])


_KNOWN_TEXTS: dict[str, Evaluate] = {
    '@{ var jwt = (Jwt)context.Variables["caller-token"]; '
    'return jwt.Claims.GetValueOrDefault("azp", jwt.Claims.GetValueOrDefault("appid", "")); }': _caller_client_id,
    '@(((Jwt)context.Variables["caller-token"]).Claims.GetValueOrDefault("roles", ""))': _caller_roles,
    '@("Bearer " + (string)context.Variables["backend-token"])': _backend_authorization,
    '@(new JObject( new JProperty("status", "ok"), new JProperty("service", "orders-sample-backend"), '
    'new JProperty("time", DateTime.UtcNow.ToString("o")), '
    'new JProperty("caller", context.Request.Headers.GetValueOrDefault("X-Caller-Client-Id", "")) '
    ').ToString(Newtonsoft.Json.Formatting.None))': _status,
    '@(JArray.Parse((string)context.Variables["orders"]).FirstOrDefault(o => (string)o["id"] == '
    'context.Request.MatchedParameters["id"])?.ToString(Newtonsoft.Json.Formatting.None) ?? "")': _find_order,
    '@(((string)context.Variables["order"]).Length > 0)': _order_found,
    '@(new JObject(new JProperty("error", new JObject( new JProperty("code", "OrderNotFound"), '
    'new JProperty("message", "No order with id \'" + context.Request.MatchedParameters["id"] + "\'.") '
    '))).ToString(Newtonsoft.Json.Formatting.None))': _order_not_found,
    '@(!context.Request.Headers.GetValueOrDefault("Content-Type", "").StartsWith("application/json"))': _not_json,
    '@{ JObject order = null; '
    'try { order = context.Request.Body.As<JObject>(preserveContent: true); } '
    'catch (Exception) { order = null; } '
    'var problems = new JArray(); '
    'if (order == null) { problems.Add("the body must be a JSON object"); '
    'return problems.ToString(Newtonsoft.Json.Formatting.None); } '
    'var item = order["item"]; var quantity = order["quantity"]; '
    'if (item == null || (item.Type != JTokenType.String && item.Type != JTokenType.Date) '
    '|| ((string)item).Trim().Length == 0) { '
    'problems.Add("\'item\' is required: a non-empty string"); } '
    'if (quantity == null || quantity.Type != JTokenType.Integer || quantity.ToString().StartsWith("-") '
    '|| quantity.ToString() == "0") { problems.Add("\'quantity\' is required: an integer of at least 1"); } '
    'return problems.ToString(Newtonsoft.Json.Formatting.None); }': _order_problems,
    '@((string)context.Variables["order-problems"] != "[]")': _has_problems,
    '@(new JObject(new JProperty("error", new JObject( new JProperty("code", "InvalidOrder"), '
    'new JProperty("message", "The order is not valid."), '
    'new JProperty("problems", JArray.Parse((string)context.Variables["order-problems"])) '
    '))).ToString(Newtonsoft.Json.Formatting.None))': _invalid_order,
    '@{ var order = context.Request.Body.As<JObject>(preserveContent: true); '
    'return new JObject( new JProperty("id", Guid.NewGuid().ToString()), '
    'new JProperty("item", order["item"]), new JProperty("quantity", order["quantity"]), '
    'new JProperty("status", "received"), new JProperty("created", DateTime.UtcNow.ToString("o")), '
    'new JProperty("created_by", context.Request.Headers.GetValueOrDefault("X-Caller-Client-Id", "")) '
    ').ToString(Newtonsoft.Json.Formatting.None); }': _new_order,
    '@("orders/" + (string)JObject.Parse((string)context.Variables["order"])["id"])': _order_location,
}

# A C# string literal without escapes: the families below take one.
_LITERAL = r'"([A-Za-z0-9_.-]*)"'


def _operation_is(match: re.Match[str]) -> Evaluate:
    operation = match.group(1)
    return lambda context: context.operation_id == operation


def _variable_as_string(match: re.Match[str]) -> Evaluate:
    name = match.group(1)
    return lambda context: _string_variable(context, name)


_STRING_PARTS = re.compile(r'("(?:[^"\\]|\\.)*")')
_SPACE_AROUND = re.compile(r"\s*([(){}\[\],;])\s*")


def _normalize(text: str) -> str:
    """Whitespace outside string literals: none around brackets, commas and semicolons, else one space."""
    parts = _STRING_PARTS.split(text.strip())
    return "".join(part if index % 2 else _SPACE_AROUND.sub(r"\1", " ".join(part.split()))
                   for index, part in enumerate(parts))


_KNOWN: dict[str, Evaluate] = {_normalize(text): evaluate for text, evaluate in _KNOWN_TEXTS.items()}
_FAMILIES: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], Evaluate], str], ...] = (
    (re.compile(re.escape(_normalize('@(context.Operation.Id == "x")')).replace('"x"', _LITERAL)), _operation_is,
     '@(context.Operation.Id == "<operation name>")'),
    (re.compile(re.escape(_normalize('@((string)context.Variables["x"])')).replace('"x"', _LITERAL)),
     _variable_as_string, '@((string)context.Variables["<variable name>"])'),
)


def has_line_comment(text: str) -> bool:
    """A `//` comment outside string literals: in an attribute it swallows the rest of the expression,
    because XML turns an attribute's line breaks into spaces."""
    return any("//" in part for index, part in enumerate(_STRING_PARTS.split(text)) if index % 2 == 0)


def is_expression(text: str) -> bool:
    stripped = text.strip()
    return stripped.startswith(("@(", "@{"))


def compile_expression(text: str) -> Expression | None:
    """The stand-in's version of an expression, or None if it does not know this one."""
    normalized = _normalize(text)
    evaluate = _KNOWN.get(normalized)
    if evaluate is None:
        for pattern, make, _ in _FAMILIES:
            match = pattern.fullmatch(normalized)
            if match:
                evaluate = make(match)
                break
    return Expression(source=text.strip(), twin=evaluate) if evaluate else None


def known_expressions() -> list[str]:
    return [*_KNOWN_TEXTS, *(example for _, _, example in _FAMILIES)]
