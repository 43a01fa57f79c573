"""The one error the normalizer raises."""

from __future__ import annotations

__all__ = ["NormalizeError"]


class NormalizeError(ValueError):
    """Malformed input: not JSON / not form-encoded, or the wrong top-level shape.

    ``str(error)`` is a one-line message naming the platform and the problem. It never quotes
    the body, so it never carries message content or secrets.
    """
