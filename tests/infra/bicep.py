"""Read infra/*.bicep offline with pycep-parser, and small helpers to query what it returns.

pycep-parser turns a Bicep file into JSON: `parameters`, `variables`, `resources`, `modules`,
`outputs`, ... Expressions become nested `{"function": ...}` / `{"operator": ...}` nodes;
interpolated strings stay as their source text ("ClientId=${x};..."); a bare identifier (a
parameter, variable or resource symbol) is a plain string, like a string literal.

pycep-parser is imported from this venv when it is installed (requirements-dev.txt); otherwise the
parse runs in the infra venv that scripts/check-infra creates (.venv-infra), which has it too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
INFRA_VENV_PYTHON = ROOT / ".venv-infra" / "bin" / "python"

GUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

_PARSE_ALL = """
import json, sys
from pathlib import Path
from pycep import BicepParser
parser = BicepParser()
print(json.dumps({p: parser.parse(file_path=Path(p)) for p in sys.argv[1:]}, default=str))
"""


class ParserUnavailable(RuntimeError):
    """Neither this venv nor .venv-infra has pycep-parser."""


def bicep_files() -> list[Path]:
    return sorted(INFRA.rglob("*.bicep"))


def parse_all(files: list[Path]) -> dict[str, dict[str, Any]]:
    """Parse every file; keys are paths relative to infra/ ("modules/apim.bicep")."""
    try:
        from pycep import BicepParser
    except ImportError:
        parsed = _parse_in_infra_venv(files)
    else:
        parser = BicepParser()
        parsed = {str(path): parser.parse(file_path=path) for path in files}
    return {str(Path(path).relative_to(INFRA)): template for path, template in parsed.items()}


def _parse_in_infra_venv(files: list[Path]) -> dict[str, dict[str, Any]]:
    if not INFRA_VENV_PYTHON.exists():
        raise ParserUnavailable(
            "pycep-parser is not installed here and .venv-infra does not exist: "
            "run scripts/check-infra (or pip install pycep-parser)")
    result = subprocess.run([str(INFRA_VENV_PYTHON), "-c", _PARSE_ALL, *map(str, files)],
                            capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        sys.stderr.write(result.stderr)
        raise AssertionError(f"pycep-parser (in .venv-infra) failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout)


# ---- querying parsed templates ---------------------------------------------------------------


def walk(node: Any) -> Iterator[Any]:
    """Every node of a parsed template, depth first."""
    yield node
    if isinstance(node, dict):
        for value in node.values():
            yield from walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from walk(value)


def functions(node: Any, name: str) -> list[dict[str, Any]]:
    """Parameters of every call of the Bicep function `name` (pycep's snake_case names)."""
    return [n["function"]["parameters"] for n in walk(node)
            if isinstance(n, dict) and isinstance(n.get("function"), dict) and n["function"].get("type") == name]


def body(resource: dict[str, Any]) -> dict[str, Any]:
    """The resource's body, also for `[for ...]` loops and `if (...)` conditions."""
    config = resource["config"]
    while isinstance(config, dict) and ("loop_type" in config or "condition" in config) and "config" in config:
        config = config["config"]
    return config


def resources(templates: dict[str, dict[str, Any]], type_: str) -> list[tuple[str, str, dict[str, Any]]]:
    """(file, symbol, body) of every declared (not `existing`) resource of a type, in every file."""
    found = []
    for file, template in templates.items():
        for symbol, resource in template.get("resources", {}).items():
            if resource["type"].lower() == type_.lower() and not resource.get("existing"):
                found.append((file, symbol, body(resource)))
    return found


def one(templates: dict[str, dict[str, Any]], type_: str) -> tuple[str, dict[str, Any]]:
    """(file, body) of the only declared resource of a type."""
    found = resources(templates, type_)
    assert len(found) == 1, f"expected one {type_}, found {[(f, s) for f, s, _ in found]}"
    file, _, config = found[0]
    return file, config


def variable(template: dict[str, Any], name: str) -> Any:
    return template["variables"][name]["value"]


def accessor(node: Any) -> list[str] | None:
    """`a.b.c` as ["a", "b", "c"]; None when the node is something else."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict) and node.get("operator", {}).get("type") == "property_accessor":
        operands = node["operator"]["operands"]
        first, rest = accessor(operands["operand_1"]), accessor(operands["operand_2"])
        if first is not None and rest is not None:
            return first + rest
    return None


def resolve(template: dict[str, Any], node: Any) -> Any:
    """Follow `var` and `var.key` references within one file (enough for role IDs and names)."""
    path = accessor(node)
    if path and path[0] in template.get("variables", {}):
        value = variable(template, path[0])
        for key in path[1:]:
            if not isinstance(value, dict) or key not in value:
                return node
            value = value[key]
        return value
    return node


def source_lines(file: str) -> list[str]:
    return (INFRA / file).read_text().splitlines()


def load_paths(templates: dict[str, dict[str, Any]]) -> dict[Path, str]:
    """Every file inlined with loadTextContent/loadJsonContent, resolved, -> the .bicep loading it."""
    loaded = {}
    for file, template in templates.items():
        for kind in ("load_text_content", "load_json_content"):
            for call in functions(template, kind):
                loaded[((INFRA / file).parent / call["file_path"]).resolve()] = file
    return loaded
