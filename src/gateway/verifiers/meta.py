"""Meta (WhatsApp Cloud API, Messenger, Instagram): ``X-Hub-Signature-256`` and the GET
``hub.*`` subscription handshake.

The signature is ``sha256=<lowercase hex HMAC-SHA256(app secret, raw body)>``; it is computed on
the bytes as received (Meta signs its escaped-unicode serialisation; re-encoding would differ).
``app_secret`` and ``previous_app_secret`` are both accepted.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.verifiers._secrets import candidates, equal

if TYPE_CHECKING:
    from gateway.verifiers import WebhookRequest

_PREFIX = "sha256="


class MetaVerifier:
    content_types: frozenset[str] = frozenset({"application/json"})
    signature_headers: tuple[str, ...] = ("x-hub-signature-256",)
    reply: tuple[bytes, str] | None = None

    def verify(self, request: WebhookRequest, credentials: Mapping[str, str]) -> bool:
        header = request.headers.get("x-hub-signature-256", "")
        if not header.lower().startswith(_PREFIX):
            return False
        provided = header[len(_PREFIX) :].strip().lower().encode("ascii", "replace")
        ok = False
        for secret in candidates(credentials, "app_secret", "previous_app_secret"):
            expected = hmac.new(secret, request.body, hashlib.sha256).hexdigest().encode()
            ok |= equal(expected, provided)  # no early exit: same work whichever secret matches
        return ok

    def handshake(self, query: Mapping[str, str], credentials: Mapping[str, str]) -> str | None:
        token = query.get("hub.verify_token", "").encode()
        expected = credentials.get("verify_token", "").encode()
        challenge = query.get("hub.challenge")
        if query.get("hub.mode") != "subscribe" or challenge is None or not expected:
            return None
        return challenge if equal(token, expected) else None
