"""Validate azure.yaml against azd's schema and host.json against SchemaStore's, offline.

The schemas are the copies in ../shared/azure-types/schemas/ (see its README): azd's
`schemas/v1.0/azure.yaml.json` and SchemaStore's `host.json`. A `$ref` to another remote schema is
never fetched; validation fails naming it if a document needs one.

Usage: python scripts/json_schemas.py [--types DIR]
The folder is looked for in $AZURE_TYPES_DIR, else ../shared/azure-types beside the repository;
without it this says so and exits 0. Exit status 1 when a document does not validate.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from azure_types import default_types_dir  # scripts/ is on sys.path when run as a script
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource

ROOT = Path(__file__).resolve().parents[1]

# document (relative to the repository) -> schema file in <types>/schemas/
DOCUMENTS = {
    "azure.yaml": "azure.yaml.schema.json",
    "host.json": "host.schema.json",
}


def _offline(uri: str) -> Resource[Any]:
    raise NoSuchResource(ref=f"{uri} (a remote schema; not fetched by this offline check)")


def load_document(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    return yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)


def errors(document: Any, schema: dict[str, Any]) -> list[str]:
    """Every validation error, as 'path: message', sorted by path."""
    validator_class = jsonschema.validators.validator_for(schema)
    validator_class.check_schema(schema)
    validator = validator_class(schema, registry=Registry(retrieve=_offline))
    found = []
    for error in validator.iter_errors(document):
        for cause in _closest(error):
            where = "/".join(str(p) for p in cause.absolute_path) or "(root)"
            found.append(f"{where}: {cause.message}")
    return sorted(found)


def _closest(error: jsonschema.ValidationError) -> list[jsonschema.ValidationError]:
    """Under oneOf/anyOf (host.json's root is one), the errors of the branch that came closest."""
    if not error.context:
        return [error]
    branches: dict[Any, list[jsonschema.ValidationError]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    # Fewest errors; on a tie the deepest (a wrong value beats "nothing here is allowed").
    return min(branches.values(), key=lambda errs: (len(errs), -max(len(e.absolute_path) for e in errs)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", type=Path, default=None, help="the azure-types folder (with schemas/)")
    parser.add_argument("--root", type=Path, default=ROOT, help="where azure.yaml and host.json are")
    args = parser.parse_args(argv)
    schemas = (args.types or default_types_dir()) / "schemas"
    if not schemas.is_dir():
        print(f"schemas: skipped: no schemas at {schemas} (they sit beside the repository in the project's "
              f"workspace; set AZURE_TYPES_DIR to use another copy)")
        return 0
    failed = False
    for document, schema_file in DOCUMENTS.items():
        schema = json.loads((schemas / schema_file).read_text(encoding="utf-8"))
        try:
            found = errors(load_document(args.root / document), schema)
        except jsonschema.exceptions.SchemaError as exc:
            found = [f"(schema {schema_file}) {exc.message}"]
        except Exception as exc:  # an unresolvable $ref or an unreadable document: name it
            found = [f"{type(exc).__name__}: {exc}"]
        for line in found:
            print(f"INVALID {document}: {line}")
        print(f"schemas: {document} {'fails' if found else 'passes'} {schema_file}")
        failed |= bool(found)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
