"""Helpers shared by the verifiers."""

from __future__ import annotations

import hmac
from collections.abc import Mapping


def candidates(credentials: Mapping[str, str], current: str, previous: str) -> list[bytes]:
    """The active secrets (current first, then the one being rotated out), as bytes."""
    return [credentials[k].encode() for k in (current, previous) if credentials.get(k)]


def equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)
