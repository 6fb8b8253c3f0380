"""Workflow Definition Language expressions: the one function our definition uses, and nothing else.

A JSON string in a definition is a literal, a whole-value expression (`"@parameters('x')"`,
which keeps the parameter's type), or a string with interpolations
(`"@{parameters('a')}@{parameters('b')}"`, always a string). A leading `@@` stands for a
literal `@`. Inside an expression only `parameters('<name>')` is implemented; any other
function, property access or operator is reported, so the runner refuses the file rather
than evaluating it wrongly. Why no general evaluator: the definition needs one function, and
a list that small cannot silently disagree with Logic Apps.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SUPPORTED_FUNCTIONS = ("parameters",)

# parameters('name'), with '' as an escaped quote inside the name, and optional blanks.
_CALL = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(\s*'((?:[^']|'')*)'\s*\)\s*")
_FUNCTION_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*\(")


class ExpressionError(ValueError):
    """An expression uses something this runner does not implement, or is malformed."""


@dataclass(frozen=True)
class ParameterRef:
    """`parameters('name')`: the workflow parameter's value at run time."""

    name: str


@dataclass(frozen=True)
class Template:
    """A definition value as compiled: literal text and parameter references, in order.

    `whole` is true for a whole-value expression, whose result keeps the parameter's type.
    """

    parts: tuple[str | ParameterRef, ...]
    whole: bool = False

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(part.name for part in self.parts if isinstance(part, ParameterRef))

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        if self.whole:
            [ref] = self.parts
            assert isinstance(ref, ParameterRef)
            return values[ref.name]
        return "".join(part if isinstance(part, str) else _as_text(values[part.name]) for part in self.parts)


def _as_text(value: Any) -> str:
    # Logic Apps interpolates a string as itself; our definition only interpolates strings.
    return value if isinstance(value, str) else str(value)


def compile_value(text: str) -> Template:
    """Compile one JSON string of a definition; raise ExpressionError naming what is unsupported."""
    if text.startswith("@@"):
        return Template((text[1:],))
    if text.startswith("@") and not text.startswith("@{"):
        return Template((_compile_call(text[1:]),), whole=True)
    return Template(tuple(_interpolations(text)))


def _interpolations(text: str) -> list[str | ParameterRef]:
    parts: list[str | ParameterRef] = []
    position = 0
    while (start := text.find("@{", position)) != -1:
        end = text.find("}", start)
        if end == -1:
            raise ExpressionError(f"unterminated '@{{' in {text!r}")
        if start > position:
            parts.append(text[position:start])
        parts.append(_compile_call(text[start + 2:end]))
        position = end + 1
    if position < len(text):
        parts.append(text[position:])
    return parts


def _compile_call(expression: str) -> ParameterRef:
    match = _CALL.fullmatch(expression)
    if match is None:
        name = _FUNCTION_NAME.match(expression)
        if name and name.group(1) not in SUPPORTED_FUNCTIONS:
            raise ExpressionError(f"expression function '{name.group(1)}' (in {expression!r})")
        raise ExpressionError(f"expression {expression!r}: only parameters('<name>') is implemented")
    function, argument = match.groups()
    if function not in SUPPORTED_FUNCTIONS:
        raise ExpressionError(f"expression function '{function}' (in {expression!r})")
    return ParameterRef(argument.replace("''", "'"))
