"""Encryption of channel secrets at rest (Fernet: AES-128-CBC + HMAC-SHA256, with key rotation).

``SWITCHBOARD_ENCRYPTION_KEYS`` holds one or more Fernet keys, comma-separated: the first
encrypts, every one decrypts, so keys rotate by prepending a new key and re-saving channels.
"""

from __future__ import annotations

import base64
import hashlib

import orjson
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from infra.errors import SwitchboardError
from infra.settings import Settings


class SecretBoxError(SwitchboardError):
    code = "secret_decryption_failed"


class SecretBox:
    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one encryption key is required")
        try:
            self._fernet = MultiFernet([Fernet(k.strip().encode()) for k in keys])
        except ValueError as exc:
            raise ValueError(
                "SWITCHBOARD_ENCRYPTION_KEYS must be Fernet keys (32 url-safe base64 bytes); "
                "create one with `switchboard keygen`"
            ) from exc

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        if settings.encryption_keys is None:
            raise ValueError(
                "SWITCHBOARD_ENCRYPTION_KEYS is not set; create a key with `switchboard keygen`"
            )
        return cls([k for k in settings.encryption_keys.get_secret_value().split(",") if k.strip()])

    def encrypt_json(self, value: dict[str, str]) -> bytes:
        return self._fernet.encrypt(orjson.dumps(value))

    def decrypt_json(self, token: bytes) -> dict[str, str]:
        try:
            data: dict[str, str] = orjson.loads(self._fernet.decrypt(token))
        except InvalidToken as exc:
            raise SecretBoxError(
                "channel secrets cannot be decrypted with the configured keys"
            ) from exc
        return data


def generate_key() -> str:
    return Fernet.generate_key().decode()


def derive_key(seed: str) -> str:
    """A stable Fernet key from a seed, for dev data dirs (never used when keys are configured)."""
    return base64.urlsafe_b64encode(hashlib.sha256(seed.encode()).digest()).decode()
