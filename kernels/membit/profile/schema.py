"""The report's JSON Schema and a small validator for the subset of it that the schema uses.

`jsonschema` is not a dependency (it is often absent where training runs), so the writer's
tests validate with this: type (one or several), properties, required,
additionalProperties, items, enum, const, minimum, pattern, anyOf and $ref into $defs. The
extension's reader implements the same subset.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, List

SCHEMA_ID = "membit.report/1"
SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "report.schema.json")


def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


def _type_ok(value: Any, t: str) -> bool:
    if t == "null":
        return value is None
    if t == "boolean":
        return isinstance(value, bool)
    if t == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if t == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if t == "string":
        return isinstance(value, str)
    if t == "array":
        return isinstance(value, list)
    if t == "object":
        return isinstance(value, dict)
    raise ValueError(f"schema uses an unsupported type {t!r}")


_SUPPORTED = {"$schema", "$id", "$defs", "$ref", "title", "description", "type", "properties", "required",
              "additionalProperties", "items", "enum", "const", "minimum", "pattern", "anyOf", "examples"}


def validate(value: Any, schema: dict = None) -> List[str]:
    """Errors as 'path: message' strings; an empty list means valid."""
    root = schema if schema is not None else load_schema()
    errors: List[str] = []

    def walk(s, v, path):
        if s is True:
            return
        if s is False:
            errors.append(f"{path}: not allowed")
            return
        unknown = set(s) - _SUPPORTED
        if unknown:
            raise ValueError(f"schema at {path} uses keywords this validator does not implement: {sorted(unknown)}")
        if "$ref" in s:
            ref = s["$ref"]
            prefix = "#/$defs/"
            if not ref.startswith(prefix) or ref[len(prefix):] not in root.get("$defs", {}):
                raise ValueError(f"unresolvable $ref {ref}")
            walk(root["$defs"][ref[len(prefix):]], v, path)
        if "type" in s:
            types = s["type"] if isinstance(s["type"], list) else [s["type"]]
            if not any(_type_ok(v, t) for t in types):
                errors.append(f"{path}: expected {' or '.join(types)}, got {type(v).__name__}")
                return
        if "enum" in s and v not in s["enum"]:
            errors.append(f"{path}: {v!r} is not one of {s['enum']}")
        if "const" in s and v != s["const"]:
            errors.append(f"{path}: expected {s['const']!r}, got {v!r}")
        if "pattern" in s and isinstance(v, str) and re.search(s["pattern"], v) is None:
            errors.append(f"{path}: {v!r} does not match {s['pattern']}")
        if "minimum" in s and isinstance(v, (int, float)) and not isinstance(v, bool) and v < s["minimum"]:
            errors.append(f"{path}: {v} is below the minimum {s['minimum']}")
        if "anyOf" in s:
            ok = False
            for alt in s["anyOf"]:
                before = len(errors)
                walk(alt, v, path)
                if len(errors) == before:
                    ok = True
                del errors[before:]
                if ok:
                    break
            if not ok:
                errors.append(f"{path}: matches none of the allowed shapes")
        if isinstance(v, list) and "items" in s:
            for i, item in enumerate(v):
                walk(s["items"], item, f"{path}[{i}]")
        if isinstance(v, dict):
            for key in s.get("required", []):
                if key not in v:
                    errors.append(f"{path}: missing required field {key!r}")
            props = s.get("properties", {})
            for key, item in v.items():
                if key in props:
                    walk(props[key], item, f"{path}.{key}")
                elif "additionalProperties" in s:
                    walk(s["additionalProperties"], item, f"{path}.{key}")

    walk(root, value, "$")
    return errors
