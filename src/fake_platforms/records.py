"""What the fake platform server records: requests, uploads and posted Twilio callbacks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["Media", "Platform", "PostedCallback", "RecordedRequest", "Upload"]

Platform = Literal["whatsapp", "messenger", "telegram", "twilio"]

Media = dict[str, tuple[bytes, str]]
"""Downloadable files by key: ``(data, content type)``."""


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    platform: Platform
    method: str
    path: str
    headers: Mapping[str, str]
    json: Any
    """Parsed JSON body (WhatsApp, Messenger, Telegram), else None."""
    form: Mapping[str, list[str]]
    """Parsed form body (Twilio), else empty."""
    recipient: str | None
    arrived_at: float
    """``time.monotonic()`` at arrival."""
    status: int
    """The status the server answered (or would have, for hangs: 0)."""


@dataclass(frozen=True, slots=True)
class Upload:
    """A file uploaded to the fake Graph API (WhatsApp media or Meta attachment upload)."""

    path: str
    fields: Mapping[str, str]
    filename: str | None
    content_type: str | None
    data: bytes
    media_id: str


@dataclass(frozen=True, slots=True)
class PostedCallback:
    """A status callback the fake Twilio posted to a ``StatusCallback`` URL."""

    url: str
    params: Mapping[str, str]
    status: int
    """The receiver's HTTP status (0: the request failed)."""
