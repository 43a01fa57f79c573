"""String types for API schemas and contracts, defined once so every endpoint refuses the same
inputs with the same error.

The policy:
* every string we accept may end up in a PostgreSQL ``text``/``varchar`` or ``jsonb`` value,
  which cannot hold U+0000: NUL is refused everywhere (``Text`` and everything built on it);
* free text (a message body, a caption, a channel or key name) may hold any other character,
  newlines included;
* credentials travel in HTTP headers and URL paths, where any control character breaks the
  request: ``Secret`` refuses C0 controls and DEL.

Lengths come before the character check: after a function validator pydantic would report a
generic "Value should have …" message.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any

import orjson
from pydantic import AfterValidator, BeforeValidator, Field, SecretStr
from pydantic_core import PydanticCustomError

__all__ = [
    "Instant",
    "Label",
    "NonEmptyText",
    "Secret",
    "Text",
    "UuidText",
    "holds_nul",
    "no_nul",
]


def no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and no platform id, name or message contains one."""
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain NUL characters (\\u0000)")
    return value


def holds_nul(value: Any, encoded: bytes | None = None) -> bool:
    """Whether any string in a JSON-like value (keys included) holds NUL: for free-form JSON
    (metadata, template components), where no string type can be attached to each value.

    JSON has to escape NUL (``\\u0000``), so a value whose JSON lacks that escape holds none:
    one C-speed ``orjson.dumps`` answers almost every call (the delivery worker asks once per
    send, and walking the value cost ~1 % of a send's CPU); only a value that may hold one, or
    that orjson refuses, is walked. ``encoded``: the value's ``orjson.dumps``, when the caller
    has it already."""
    if isinstance(value, str):
        return "\x00" in value
    if encoded is None:
        try:
            encoded = orjson.dumps(value)
        except (orjson.JSONEncodeError, TypeError):
            return _walk_for_nul(value)
    return b"\\u0000" in encoded and _walk_for_nul(value)


def _walk_for_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_walk_for_nul(k) or _walk_for_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_walk_for_nul(v) for v in value)
    return False


Text = Annotated[str, AfterValidator(no_nul)]
"""Any string without NUL (may be empty)."""

NonEmptyText = Annotated[str, Field(min_length=1), AfterValidator(no_nul)]
"""A non-empty string without NUL."""

Label = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(no_nul)]
"""A human-given name (channel, API key): 1-200 characters, no NUL (``varchar(200)`` columns)."""


def _no_control(value: SecretStr) -> SecretStr:
    """Credentials travel in HTTP headers and URL paths, where a control character (a stray
    newline from a copy-paste) makes every send fail: refuse it when the channel is saved."""
    if any(ord(c) < 32 or ord(c) == 127 for c in value.get_secret_value()):
        raise PydanticCustomError(
            "control_character", "must not contain control characters (newline, tab, NUL, …)"
        )
    return value


Secret = Annotated[SecretStr, Field(min_length=1, max_length=4096), AfterValidator(_no_control)]
"""A credential: 1-4096 characters, no control characters; never echoed back."""


_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?\s*")


def _not_a_number(value: object) -> object:
    """pydantic reads a number (or a numeric string, as every query value is) as Unix time:
    ``created_after=0`` would be 1970. The API documents RFC 3339 date-times and means it."""
    if isinstance(value, bool | int | float) or (
        isinstance(value, str) and _NUMBER.fullmatch(value)
    ):
        raise PydanticCustomError(
            "datetime_format", "must be an RFC 3339 date-time, e.g. 2026-01-31T12:00:00Z"
        )
    return value


Instant = Annotated[datetime, BeforeValidator(_not_a_number)]
"""An RFC 3339 date-time (a string); numbers are refused."""


def _uuid_text(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise PydanticCustomError("uuid_parsing", "must be a UUID") from None


UuidText = Annotated[
    str,
    Field(min_length=32, max_length=45, json_schema_extra={"format": "uuid"}),
    AfterValidator(_uuid_text),
]
"""A UUID kept as its canonical string (contracts carry ids as strings)."""
