"""Telegram Bot API: the ``X-Telegram-Bot-Api-Secret-Token`` header equals the secret given to
``setWebhook``. No body signature and no handshake (GET answers 405).

That header *is* the secret, so it is never archived: a Telegram webhook in the raw archive
carries no re-verification material, only the fact that it was verified on receipt.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from gateway.verifiers._secrets import candidates, equal

if TYPE_CHECKING:
    from gateway.verifiers import WebhookRequest


class TelegramVerifier:
    content_types: frozenset[str] = frozenset({"application/json"})
    signature_headers: tuple[str, ...] = ()
    reply: tuple[bytes, str] | None = None

    def verify(self, request: WebhookRequest, credentials: Mapping[str, str]) -> bool:
        provided = request.headers.get("x-telegram-bot-api-secret-token", "").encode()
        ok = False
        for secret in candidates(credentials, "secret_token", "previous_secret_token"):
            ok |= equal(secret, provided)
        return ok and bool(provided)

    def handshake(self, query: Mapping[str, str], credentials: Mapping[str, str]) -> str | None:
        raise NotImplementedError
