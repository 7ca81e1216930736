"""Validate `--format json` documents against the schemas users read in docs/schemas/.

Generic on purpose: `assert_valid("NAME", doc)` loads docs/schemas/NAME.schema.json, so a new
command's schema needs no code here."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "docs" / "schemas"


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.schema.json"


def schema_names() -> list[str]:
    return sorted(p.name.removesuffix(".schema.json") for p in SCHEMA_DIR.glob("*.schema.json"))


@cache
def load_schema(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(schema_path(name).read_text())
    return data


def schema_errors(name: str, document: Any) -> list[str]:
    """Every way `document` breaks the schema, as `at /path: message` lines (empty: valid)."""
    from jsonschema.validators import validator_for

    schema = load_schema(name)
    validator = validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: [str(p) for p in e.path])
    return [f"at /{'/'.join(str(p) for p in e.path)}: {e.message}" for e in errors]


def assert_valid(name: str, document: Any) -> None:
    errors = schema_errors(name, document)
    assert not errors, (f"output does not match docs/schemas/{name}.schema.json:\n  "
                        + "\n  ".join(errors[:10]))
