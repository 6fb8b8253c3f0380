"""HTTP routes of a function app, matched as the Functions host matches them.

The host (ASP.NET Core) serves each HTTP function at `/<routePrefix>/<route>`, where
`route` is an ASP.NET route template: literal segments (matched without regard to
case), `{name}`, `{name?}`, `{name:constraint}` and a final catch-all `{*name}`.
Before matching, Kestrel percent-decodes the path except `%2F`, which stays encoded so
that it cannot make new segments, and removes `.` and `..` segments. Route values are
taken from that decoded path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

DEFAULT_ROUTE_PREFIX = "api"

# Inline constraints the host's router knows; a value that fails one does not match the route.
_CONSTRAINTS = {
    "int": re.compile(r"-?\d+"),
    "long": re.compile(r"-?\d+"),
    "bool": re.compile(r"(?i:true|false)"),
    "guid": re.compile(r"[{(]?[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}[})]?"),
    "alpha": re.compile(r"[A-Za-z]+"),
}
_PARAMETER = re.compile(r"\{(?P<star>\*{1,2})?(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<constraint>(?::[^{}?=]+)*)"
                        r"(?P<optional>\?)?\}")
_ENCODED_SLASH = re.compile(r"%2[Ff]")


class RouteTemplateError(ValueError):
    """A function's route is not a template this stand-in can match (it names the route)."""


@dataclass(frozen=True)
class _Segment:
    literal: str | None = None
    name: str | None = None
    constraints: tuple[str, ...] = ()
    optional: bool = False
    catch_all: bool = False


@dataclass(frozen=True)
class RouteTemplate:
    """One function's route, parsed; `match` returns its route values or None."""

    template: str
    segments: tuple[_Segment, ...]

    @classmethod
    def parse(cls, template: str) -> RouteTemplate:
        segments = []
        parts = template.strip("/").split("/") if template.strip("/") else []
        for index, part in enumerate(parts):
            segment = _parse_segment(part, template)
            if segment.catch_all and index != len(parts) - 1:
                raise RouteTemplateError(f"route '{template}': a catch-all parameter must be the last segment")
            segments.append(segment)
        return cls(template=template, segments=tuple(segments))

    def match(self, path: str) -> dict[str, str] | None:
        """Route values for `path` (decoded, without the route prefix), or None if it does not match."""
        parts = path.strip("/").split("/") if path.strip("/") else []
        values: dict[str, str] = {}
        for index, segment in enumerate(self.segments):
            if segment.catch_all:
                rest = "/".join(parts[index:])
                if rest:
                    values[segment.name or ""] = rest
                return values
            if index >= len(parts):
                return values if all(s.optional or s.catch_all for s in self.segments[index:]) else None
            part = parts[index]
            if segment.literal is not None:
                if part.lower() != segment.literal.lower():
                    return None
                continue
            if not all(_CONSTRAINTS[c].fullmatch(part) for c in segment.constraints):
                return None
            values[segment.name or ""] = part
        return values if len(parts) == len(self.segments) else None


def _parse_segment(part: str, template: str) -> _Segment:
    found = _PARAMETER.fullmatch(part)
    if found is None:
        if "{" in part or "}" in part:
            raise RouteTemplateError(f"route '{template}': segment '{part}' mixes text and parameters, "
                                     "which this stand-in does not match")
        return _Segment(literal=part)
    constraints = tuple(c.split("(")[0] for c in found["constraint"].split(":") if c)
    unknown = [c for c in constraints if c not in _CONSTRAINTS]
    if unknown:
        raise RouteTemplateError(f"route '{template}': unknown route constraint '{unknown[0]}' "
                                 f"(known: {', '.join(_CONSTRAINTS)})")
    return _Segment(name=found["name"], constraints=constraints, optional=bool(found["optional"]),
                    catch_all=bool(found["star"]))


def decode_path(raw_path: str) -> str:
    """The request path as the host's routing sees it: decoded except %2F, dot segments removed.

    Bytes that do not form UTF-8 are kept percent-encoded, as Kestrel keeps them.
    """
    pieces = _ENCODED_SLASH.split(raw_path)
    slashes = _ENCODED_SLASH.findall(raw_path)
    decoded = [_decode_piece(piece) for piece in pieces]
    text = decoded[0] + "".join(slash + piece for slash, piece in zip(slashes, decoded[1:], strict=True))
    return _remove_dot_segments(text)


def _decode_piece(piece: str) -> str:
    raw = unquote_to_bytes(piece)
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return piece


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 section 5.2.4, as Kestrel applies it to every request path."""
    output: list[str] = []
    segments = path.split("/")
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == ".":
            if last:
                output.append("")
        elif segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/".join(output) or "/"
