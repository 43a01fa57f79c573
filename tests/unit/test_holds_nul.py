"""``infra.schema_types.holds_nul``: a NUL anywhere in a JSON-like value, keys included, is found
whether the fast check (the value's JSON) or the walk answers; lookalikes are not NUL."""

from __future__ import annotations

from typing import Any

import pytest

from infra.schema_types import holds_nul

CASES: list[tuple[str, Any, bool]] = [
    ("plain object", {"a": "x", "n": [1, 2.5, None, True]}, False),
    ("in a key", {"a\x00": 1}, True),
    ("deep in a value", {"a": ["b", {"c": "d\x00"}]}, True),
    ("in a tuple", ("x", ("y\x00",)), True),
    ("the six characters \\u0000 are not NUL", {"a": "\\u0000"}, False),
    ("an escaped backslash then NUL", {"a": "\\\x00"}, True),
    ("a string", "plain", False),
    ("a NUL string", "\x00", True),
    ("a non-string key orjson refuses, no NUL", {1: "x"}, False),
    ("a non-string key orjson refuses, NUL in its value", {1: "x\x00"}, True),
    ("an integer beyond 64 bits orjson refuses, no NUL", {"k": 2**70}, False),
    ("an integer beyond 64 bits orjson refuses, NUL beside it", {"k": [2**70, "z\x00"]}, True),
]


@pytest.mark.parametrize(("value", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_holds_nul(value: Any, expected: bool) -> None:
    assert holds_nul(value) is expected
