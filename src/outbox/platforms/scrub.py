"""Keeping credentials out of everything a sender returns.

Credentials travel in headers (Meta, Twilio) or in the URL path (Telegram). Every text taken
from a platform's response or a transport exception goes through ``scrub`` before it reaches a
``SendResult``, a log line or the database.
"""

from __future__ import annotations

import html
import re
import urllib.parse
from collections.abc import Iterable

__all__ = ["scrub"]

_REDACTED = "***"
_WITHHELD = "[withheld: the answer echoed a credential]"
_SECRET_PART_MIN = 16
_BACKSLASH_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})|\\x([0-9a-fA-F]{2})")
_DECODE_ROUNDS = 3


def _secret_forms(secrets: Iterable[str]) -> list[str]:
    """Each secret, and its secret part: what follows the last ``:`` (a Telegram token is
    ``<bot id>:<secret>``; the bot id is public, the rest alone is enough to use the bot)."""
    forms: dict[str, None] = {}
    for secret in secrets:
        if secret:
            forms[secret] = None
            part = secret.rpartition(":")[2]
            if part != secret and len(part) >= _SECRET_PART_MIN:
                forms[part] = None
    return list(forms)


def _unescape_backslashes(text: str) -> str:
    return _BACKSLASH_ESCAPE.sub(lambda m: chr(int(m.group(1) or m.group(2), 16)), text)


def _decodings(text: str) -> set[str]:
    """``text`` as a reader might decode it: HTML entities (``&#58;``, ``&colon;``), percent
    (``%3a``, ``%3A``), backslash escapes (``\\u003a``, ``\\x3a``), and combinations of up to
    three of these (a percent-encoded URL in an HTML page in a JSON string)."""
    seen = {text}
    frontier = [text]
    for _ in range(_DECODE_ROUNDS):
        found: list[str] = []
        for form in frontier:
            for decode in (html.unescape, urllib.parse.unquote, _unescape_backslashes):
                decoded = decode(form)
                if decoded not in seen:
                    seen.add(decoded)
                    found.append(decoded)
        frontier = found
    return seen


def scrub(text: str, secrets: Iterable[str]) -> str:
    """``text`` without any credential, however a server or proxy echoed it.

    Each secret (and its secret part, ``_secret_forms``) is first replaced where it appears as
    sent or percent-encoded. If any decoding of what is left still holds one (a colon echoed
    as ``&#58;`` or ``\\u003a``, an upper-cased URL…), the whole text is withheld: nothing a
    platform echoes is worth a credential, and no list of encodings is ever complete.
    """
    forms = _secret_forms(secrets)
    for secret in forms:
        quoted = (urllib.parse.quote(secret, safe=""), urllib.parse.quote(secret))
        for form in dict.fromkeys((secret, *quoted)):
            text = text.replace(form, _REDACTED)
    if forms:
        lowered = [form.lower() for form in forms]
        for decoded in _decodings(text):
            folded = decoded.lower()
            if any(secret in folded for secret in lowered):
                return _WITHHELD
    return text
