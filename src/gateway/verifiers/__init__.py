"""Webhook verifiers: one module per platform family behind one small Protocol.

A verifier sees the raw request (bytes, headers, the public URL the platform called) and the
channel's decrypted credentials, and answers yes or no in constant time with respect to the
secret. It never parses the body beyond what the platform signs (Twilio signs form params),
never raises for hostile input, and never says *why* it refused: the caller answers a bare 401.

Every verifier accepts the current and the ``previous_*`` secret, so secrets rotate without
downtime. Adding a platform = one module here + one entry in ``REGISTRY``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from gateway.verifiers.meta import MetaVerifier
from gateway.verifiers.telegram import TelegramVerifier
from gateway.verifiers.twilio import TwilioVerifier

__all__ = ["REGISTRY", "Verifier", "WebhookRequest"]


@dataclass(frozen=True, slots=True)
class WebhookRequest:
    """What a verifier may look at. ``headers`` keys are lower-case."""

    body: bytes
    headers: Mapping[str, str]
    url: str
    """The public URL the platform called, query string included (Twilio signs it)."""
    content_type: str | None


class Verifier(Protocol):
    content_types: frozenset[str]
    """Accepted media types (without parameters); anything else is 415."""

    signature_headers: tuple[str, ...]
    """Headers kept in the raw archive so the webhook can be re-verified (never secrets)."""

    reply: tuple[bytes, str] | None
    """A fixed answer the platform expects to an accepted webhook (body, content type), as
    Twilio expects TwiML; None answers with the JSON summary of the events."""

    def verify(self, request: WebhookRequest, credentials: Mapping[str, str]) -> bool: ...

    def handshake(self, query: Mapping[str, str], credentials: Mapping[str, str]) -> str | None:
        """The body of a successful subscription handshake, or None to refuse (403).

        Raise ``NotImplementedError`` when the platform has no handshake (405)."""
        ...


_meta = MetaVerifier()
REGISTRY: dict[str, Verifier] = {
    "whatsapp": _meta,
    "messenger": _meta,
    "instagram": _meta,
    "telegram": TelegramVerifier(),
    "twilio": TwilioVerifier(),
}
