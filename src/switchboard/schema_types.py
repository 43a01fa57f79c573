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

from typing import Annotated, Any

from pydantic import AfterValidator, Field, SecretStr
from pydantic_core import PydanticCustomError

__all__ = [
    "Label",
    "NonEmptyText",
    "Secret",
    "Text",
    "holds_nul",
    "no_nul",
]


def no_nul(value: str) -> str:
    """PostgreSQL text cannot hold NUL, and no platform id, name or message contains one."""
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "must not contain NUL characters (\\u0000)")
    return value


def holds_nul(value: Any) -> bool:
    """Whether any string in a JSON-like value (keys included) holds NUL: for free-form JSON
    (metadata, template components), where no string type can be attached to each value."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(holds_nul(k) or holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(holds_nul(v) for v in value)
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
