"""A small JSON Schema checker for the keywords pydantic emits (no dependency needed).

Supports: $ref (local), anyOf, oneOf, allOf, const, enum, type, properties, required,
additionalProperties (false or schema), items, pattern. Unknown keywords are ignored.
"""

from __future__ import annotations

import re
from typing import Any


class SchemaError(AssertionError):
    pass


_TYPES: dict[str, Any] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
}


def validate(instance: Any, schema: dict[str, Any]) -> None:
    _check(instance, schema, schema, "$")


def _errors(instance: Any, schema: dict[str, Any], root: dict[str, Any], path: str) -> bool:
    try:
        _check(instance, schema, root, path)
    except SchemaError:
        return False
    return True


def _check(v: Any, s: dict[str, Any], root: dict[str, Any], path: str) -> None:
    if "$ref" in s:
        ref = s["$ref"]
        assert ref.startswith("#/"), ref
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        _check(v, target, root, path)
    if "type" in s:
        types = s["type"] if isinstance(s["type"], list) else [s["type"]]
        if not any(_TYPES[t](v) for t in types):
            raise SchemaError(f"{path}: {v!r} is not of type {types}")
    if "const" in s and v != s["const"]:
        raise SchemaError(f"{path}: {v!r} != const {s['const']!r}")
    if "enum" in s and v not in s["enum"]:
        raise SchemaError(f"{path}: {v!r} not in {s['enum']}")
    if "pattern" in s and isinstance(v, str) and not re.search(s["pattern"], v):
        raise SchemaError(f"{path}: {v!r} does not match {s['pattern']}")
    if "anyOf" in s and not any(_errors(v, sub, root, path) for sub in s["anyOf"]):
        raise SchemaError(f"{path}: matches no anyOf branch")
    if "oneOf" in s:
        n = sum(_errors(v, sub, root, path) for sub in s["oneOf"])
        if n != 1:
            raise SchemaError(f"{path}: matches {n} oneOf branches")
    for sub in s.get("allOf", []):
        _check(v, sub, root, path)
    if isinstance(v, dict):
        props = s.get("properties", {})
        for name in s.get("required", []):
            if name not in v:
                raise SchemaError(f"{path}: missing required {name!r}")
        for name, value in v.items():
            if name in props:
                _check(value, props[name], root, f"{path}.{name}")
            elif s.get("additionalProperties") is False:
                raise SchemaError(f"{path}: unexpected property {name!r}")
            elif isinstance(s.get("additionalProperties"), dict):
                _check(value, s["additionalProperties"], root, f"{path}.{name}")
    if isinstance(v, list) and isinstance(s.get("items"), dict):
        for i, item in enumerate(v):
            _check(item, s["items"], root, f"{path}[{i}]")
