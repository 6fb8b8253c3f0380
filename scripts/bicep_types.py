"""Check every resource declaration in infra/ against the Bicep compiler's own type data.

The data is bicep-types' index format (see ../shared/azure-types/README.md): one JSON array per
provider namespace and api-version, whose `ResourceType` entries point at the body's `ObjectType`.
For each declaration this reports, as `az bicep build` would:

- a type or api-version with no data (a failure naming it, never a silent skip);
- properties the type does not have (misspelled, or at the wrong nesting), with the nearest name;
- required properties that are missing, read-only properties that are set;
- literal values of the wrong kind (an object where an array belongs, a string for a boolean, ...);
- string literals outside a closed enum (errors) or outside an open one (warnings: the service
  accepts values the data does not list).

Values computed at deployment (parameters, references, function calls, interpolated strings) are
not judged, as the compiler cannot judge them either. Files are parsed with tree-sitter-bicep,
which keeps a string literal ('appInsights') apart from an identifier (appInsights); pycep-parser
reads the same files, and the two must agree on which resources each file declares.

Usage: python scripts/bicep_types.py [--types DIR] [FILE ...]   (default: infra/**/*.bicep)
The type data is looked for in $AZURE_TYPES_DIR, else ../shared/azure-types beside the repository.
Exit status: 0 without errors (warnings allowed), 1 with errors, 0 with a notice when there is no
type data at all (a clone outside the workspace that has it).
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import tree_sitter_bicep
from azure_types import default_types_dir  # scripts/ is on sys.path when run as a script
from tree_sitter import Language, Node, Parser

ROOT = Path(__file__).resolve().parents[1]

# ObjectTypeProperty flags in bicep-types.
REQUIRED, READ_ONLY = 1, 2

# What Bicep itself adds to every resource body (not in the type data): the parent of a child
# resource, the scope of an extension resource, explicit dependencies.
BICEP_RESOURCE_KEYWORDS = frozenset({"parent", "scope", "dependsOn"})

# Statements newer than tree-sitter-bicep's grammar, which it reads as an ERROR node of their own.
_TOLERATED_ERRORS = re.compile(r"^extension\s+\w+(\s+with\s+\{.*\})?(\s+as\s+\w+)?$", re.DOTALL)


@dataclass(frozen=True)
class Finding:
    level: str  # "error" or "warning"
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper():7} {self.file}:{self.line}: {self.message}"


@dataclass
class Declaration:
    symbol: str
    type_name: str
    api_version: str
    existing: bool
    body: Node | None  # the resource's object, also inside `[for ...]` and `if (...)`
    line: int


class ParseError(Exception):
    pass


# ---- type data ---------------------------------------------------------------------------------


class TypeIndex:
    """The bicep-types files of a folder, loaded on first use of a namespace and api-version."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._files = sorted(folder.glob("*.json"))

    def resource(self, type_name: str, api_version: str) -> tuple[list[dict[str, Any]], dict[str, Any]] | None:
        """(the file's entries, the body type) of `type_name@api_version`, or None."""
        wanted = f"{type_name}@{api_version}".lower()
        for entries in self._candidates(type_name.split("/")[0], api_version):
            for entry in entries:
                if entry["$type"] == "ResourceType" and entry["name"].lower() == wanted:
                    return entries, resolve(entries, entry["body"])
        return None

    def _candidates(self, namespace: str, api_version: str) -> Iterator[list[dict[str, Any]]]:
        # <provider>_<namespace>_<api-version>.json; extensions (Microsoft.Graph) are named
        # <extension>_<api-version>_<extension version>.json.
        names = (f"_{namespace.lower()}_{api_version.lower()}.json", f"_{api_version.lower()}_")
        for path in self._files:
            if path.name.lower().endswith(names[0]) or names[1] in path.name.lower():
                yield _load(path)


@cache
def _load(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def resolve(entries: list[dict[str, Any]], ref: dict[str, Any]) -> dict[str, Any]:
    index = ref["$ref"].removeprefix("#/")
    return ANY if index == "any" else entries[int(index)]


ANY: dict[str, Any] = {"$type": "AnyType"}


# ---- parsing -----------------------------------------------------------------------------------


@cache
def _parser() -> Parser:
    return Parser(Language(tree_sitter_bicep.language()))


def parse(path: Path) -> list[Declaration]:
    source = path.read_bytes()
    tree = _parser().parse(source)
    for node in _errors(tree.root_node):
        text = source[node.start_byte:node.end_byte].decode().strip()
        if not _TOLERATED_ERRORS.match(text):
            raise ParseError(f"{path}:{node.start_point[0] + 1}: tree-sitter-bicep cannot parse {text[:60]!r}")
    return [_declaration(node) for node in tree.root_node.children if node.type == "resource_declaration"]


def _errors(node: Node) -> Iterator[Node]:
    if node.type == "ERROR" or node.is_missing:
        yield node
        return
    for child in node.children:
        yield from _errors(child)


def _declaration(node: Node) -> Declaration:
    symbol = next(c for c in node.children if c.type == "identifier")
    type_string = next(c for c in node.children if c.type == "string")
    type_name, _, api_version = (literal(type_string) or "").partition("@")
    value = node.children[-1]
    while value.type in ("for_statement", "if_statement"):
        value = next((c for c in reversed(value.children) if c.type in ("object", "for_statement", "if_statement")),
                     value)
        if value.type not in ("object", "for_statement", "if_statement"):
            break
    return Declaration(
        symbol=text(symbol), type_name=type_name, api_version=api_version,
        existing=any(c.type == "existing" for c in node.children),
        body=value if value.type == "object" else None, line=node.start_point[0] + 1)


def text(node: Node) -> str:
    return node.text.decode() if node.text is not None else ""


_ESCAPES = {"\\\\": "\\", "\\'": "'", "\\n": "\n", "\\r": "\r", "\\t": "\t", "\\$": "$"}


def literal(node: Node) -> str | None:
    """The value of a string literal; None for an interpolated string."""
    parts = []
    for child in node.children:
        if child.type == "interpolation":
            return None
        if child.type == "string_content":
            parts.append(text(child))
        elif child.type == "escape_sequence":
            parts.append(_ESCAPES.get(text(child), text(child)))
    return "".join(parts)


def properties(obj: Node) -> Iterator[tuple[str | None, Node, Node]]:
    """(key, key node, value node) of an object; key None when it is computed ('${x}')."""
    for prop in obj.children:
        if prop.type != "object_property":
            continue
        named = [c for c in prop.named_children if c.type not in ("comment", "decorators", "decorator")]
        if len(named) < 2:
            continue
        key_node, value = named[0], named[-1]
        key = literal(key_node) if key_node.type == "string" else text(key_node)
        yield key, key_node, value


def values(node: Node) -> list[Node]:
    return [c for c in node.named_children if c.type != "comment"]


# ---- checking ----------------------------------------------------------------------------------


@dataclass
class Checker:
    file: str
    entries: list[dict[str, Any]]
    findings: list[Finding] = field(default_factory=list)

    def report(self, level: str, node: Node, message: str) -> None:
        self.findings.append(Finding(level, self.file, node.start_point[0] + 1, message))

    def check(self, node: Node, type_: dict[str, Any], path: str) -> None:
        """Check one value against one type (both already resolved)."""
        kind = type_["$type"]
        if kind == "AnyType":
            return
        if node.type == "ternary_expression":
            for branch in values(node)[1:]:
                self.check(branch, type_, path)
            return
        if node.type == "parenthesized_expression" and values(node):
            self.check(values(node)[0], type_, path)
            return
        if kind == "UnionType":
            self._check_union(node, [resolve(self.entries, e) for e in type_["elements"]], path)
        elif node.type == "object":
            self._check_object(node, type_, path)
        elif node.type == "array":
            if kind != "ArrayType":
                self.report("error", node, f"{path}: an array where {describe(type_)} belongs")
                return
            item_type = resolve(self.entries, type_["itemType"])
            for i, item in enumerate(values(node)):
                self.check(item, item_type, f"{path}[{i}]")
        elif node.type == "string":
            self._check_string(node, type_, path)
        elif node.type in ("number", "unary_expression") and text(node).lstrip("-").isdigit():
            self._check_int(node, int(text(node)), type_, path)
        elif node.type == "boolean" and kind != "BooleanType":
            self.report("error", node, f"{path}: a boolean where {describe(type_)} belongs")
        # Anything else (a parameter, a reference, a function call) is known only at deployment.

    def _check_object(self, node: Node, type_: dict[str, Any], path: str) -> None:
        kind = type_["$type"]
        if kind == "DiscriminatedObjectType":
            type_ = self._select(node, type_)
            kind = type_["$type"]
        if kind != "ObjectType":
            self.report("error", node, f"{path}: an object where {describe(type_)} belongs")
            return
        declared = type_.get("properties", {})
        by_lower = {name.lower(): name for name in declared}
        extra = type_.get("additionalProperties")
        seen = set()
        for key, key_node, value in properties(node):
            if key is None:  # a computed key can only be an additionalProperties entry
                if extra is not None:
                    self.check(value, resolve(self.entries, extra), f"{path}[*]")
                continue
            seen.add(key)
            prop = declared.get(key)
            if prop is None and extra is not None:
                self.check(value, resolve(self.entries, extra), f"{path}.{key}")
                continue
            if prop is None:
                self.report("error", key_node, f"{path}.{key}: no such property on {type_.get('name', 'this object')}"
                            f"{_suggestion(key, declared, by_lower)}")
                continue
            if prop.get("flags", 0) & READ_ONLY:
                self.report("error", key_node, f"{path}.{key}: read-only property (set by the service)")
                continue
            self.check(value, resolve(self.entries, prop["type"]), f"{path}.{key}")
        for name, prop in declared.items():
            if prop.get("flags", 0) & REQUIRED and not prop.get("flags", 0) & READ_ONLY and name not in seen:
                self.report("error", node, f"{path}: required property '{name}' is missing")

    def _select(self, node: Node, type_: dict[str, Any]) -> dict[str, Any]:
        """The element of a discriminated object its discriminator picks; else base and all merged."""
        discriminator = type_["discriminator"]
        elements = {k: resolve(self.entries, v) for k, v in type_["elements"].items()}
        for key, _, value in properties(node):
            if key == discriminator and value.type == "string" and literal(value) is not None:
                chosen = elements.get(literal(value) or "") or next(
                    (e for k, e in elements.items() if k.lower() == (literal(value) or "").lower()), None)
                if chosen is not None:
                    return {**chosen, "properties": {**type_.get("baseProperties", {}), **chosen["properties"]}}
        merged = dict(type_.get("baseProperties", {}))
        for element in elements.values():
            merged.update({k: {**v, "flags": v.get("flags", 0) & ~REQUIRED} for k, v in element["properties"].items()})
        return {"$type": "ObjectType", "name": type_.get("name"), "properties": merged}

    def _check_union(self, node: Node, options: list[dict[str, Any]], path: str) -> None:
        if node.type == "string" and literal(node) is not None:
            allowed = [o["value"] for o in options if o["$type"] == "StringLiteralType"]
            open_enum = any(o["$type"] in ("StringType", "AnyType") for o in options)
            value = literal(node)
            if allowed and value not in allowed:
                level = "warning" if open_enum else "error"
                kind = "open" if open_enum else "closed"
                self.report(level, node, f"{path}: {value!r} is not one of the {kind} enum's values "
                            f"{allowed}{_suggestion(value or '', dict.fromkeys(allowed), {})}")
            elif not allowed and not open_enum:
                self.report("error", node, f"{path}: a string where {describe_union(options)} belongs")
            return
        # Objects, arrays and the rest: accept the value if any member takes it without errors.
        best: list[Finding] | None = None
        for option in options:
            trial = Checker(self.file, self.entries)
            trial.check(node, option, path)
            errors = [f for f in trial.findings if f.level == "error"]
            if not errors:
                self.findings.extend(trial.findings)
                return
            if best is None or len(errors) < len(best):
                best = trial.findings
        self.findings.extend(best or [])

    def _check_string(self, node: Node, type_: dict[str, Any], path: str) -> None:
        kind = type_["$type"]
        value = literal(node)
        if kind == "StringLiteralType":
            if value is not None and value != type_["value"]:
                self.report("error", node, f"{path}: must be {type_['value']!r}, not {value!r}")
        elif kind == "StringType":
            if value is None:
                return
            if "minLength" in type_ and len(value) < type_["minLength"]:
                self.report("error", node, f"{path}: {value!r} is shorter than {type_['minLength']}")
            if "maxLength" in type_ and len(value) > type_["maxLength"]:
                self.report("error", node, f"{path}: {value!r} is longer than {type_['maxLength']}")
            if "pattern" in type_ and not re.search(type_["pattern"], value):
                self.report("error", node, f"{path}: {value!r} does not match {type_['pattern']}")
        else:
            self.report("error", node, f"{path}: a string where {describe(type_)} belongs")

    def _check_int(self, node: Node, value: int, type_: dict[str, Any], path: str) -> None:
        if type_["$type"] != "IntegerType":
            self.report("error", node, f"{path}: a number where {describe(type_)} belongs")
            return
        low, high = type_.get("minValue"), type_.get("maxValue")
        if (low is not None and value < low) or (high is not None and value > high):
            self.report("error", node, f"{path}: {value} is outside [{low}, {high}]")


def describe(type_: dict[str, Any]) -> str:
    names = {"ObjectType": "an object", "ArrayType": "an array", "StringType": "a string",
             "IntegerType": "a number", "BooleanType": "a boolean", "DiscriminatedObjectType": "an object"}
    if type_["$type"] == "StringLiteralType":
        return repr(type_["value"])
    return names.get(type_["$type"], type_["$type"])


def describe_union(options: list[dict[str, Any]]) -> str:
    return " or ".join(sorted({describe(o) for o in options}))


def _suggestion(key: str, declared: dict[str, Any], by_lower: dict[str, str]) -> str:
    if key.lower() in by_lower:
        return f" (did you mean '{by_lower[key.lower()]}'? names are case-sensitive)"
    close = difflib.get_close_matches(key, list(declared), n=1, cutoff=0.7)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _with_keywords(body: dict[str, Any]) -> dict[str, Any]:
    keywords = {name: {"type": {"$ref": "#/any"}, "flags": 0} for name in BICEP_RESOURCE_KEYWORDS}
    key = "baseProperties" if body["$type"] == "DiscriminatedObjectType" else "properties"
    return {**body, key: {**keywords, **body.get(key, {})}}


def check_file(path: Path, index: TypeIndex, display: str) -> list[Finding]:
    findings = []
    for decl in parse(path):
        found = index.resource(decl.type_name, decl.api_version)
        if found is None:
            findings.append(Finding("error", display, decl.line,
                                    f"{decl.symbol}: no type data for {decl.type_name}@{decl.api_version} "
                                    f"in {index.folder} (add it there, or use an api-version it has)"))
            continue
        if decl.existing or decl.body is None:
            continue
        entries, body = found
        checker = Checker(display, entries)
        checker.check(decl.body, _with_keywords(body), decl.symbol)
        findings.extend(checker.findings)
    return findings


# ---- pycep-parser agrees on what is declared ---------------------------------------------------


def pycep_declarations(path: Path) -> dict[str, tuple[str, bool]]:
    from pycep import BicepParser  # only in .venv-infra (and the dev venv)

    template = BicepParser().parse(file_path=path)
    return {symbol: (f"{r['type']}@{r['api_version']}", bool(r.get("existing")))
            for symbol, r in template.get("resources", {}).items()}


def compare_parsers(path: Path, display: str) -> list[Finding]:
    ours = {d.symbol: (f"{d.type_name}@{d.api_version}", d.existing) for d in parse(path)}
    theirs = pycep_declarations(path)
    if ours == theirs:
        return []
    return [Finding("error", display, 1, f"tree-sitter-bicep and pycep-parser disagree on the declarations: "
                                         f"{sorted(set(ours.items()) ^ set(theirs.items()))}")]


# ---- command line ------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=Path, default=None, help="the azure-types folder (with bicep/)")
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    types_dir = (args.types or default_types_dir()) / "bicep"
    if not types_dir.is_dir():
        print(f"bicep types: skipped: no type data at {types_dir} (it sits beside the repository in the "
              f"project's workspace; set AZURE_TYPES_DIR to use another copy)")
        return 0
    files = args.files or sorted((ROOT / "infra").rglob("*.bicep"))
    index = TypeIndex(types_dir)
    findings: list[Finding] = []
    declarations = 0
    for path in files:
        display = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
        try:
            declarations += len(parse(path))
            findings += compare_parsers(path, display)
            findings += check_file(path, index, display)
        except ParseError as exc:
            findings.append(Finding("error", display, 1, str(exc)))
    for finding in findings:
        print(finding)
    errors = sum(f.level == "error" for f in findings)
    warnings = len(findings) - errors
    print(f"bicep types: {declarations} resource declarations in {len(files)} files, {errors} errors, "
          f"{warnings} warnings (type data: {types_dir})")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
