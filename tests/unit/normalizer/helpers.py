from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from normalizer import InboundEvent, normalize

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "payloads"
RECEIVED_AT = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
RECEIVED = "2026-11-22T12:00:00Z"
BOT_ID = "7000000001"


def load(platform: str, name: str) -> bytes:
    return (FIXTURES / platform / name).read_bytes()


def run(platform: str, body: bytes, **kw: Any) -> list[InboundEvent]:
    kw.setdefault("channel_id", "ch_test")
    kw.setdefault("received_at", RECEIVED_AT)
    if platform == "telegram":
        kw.setdefault("account_id", BOT_ID)
    if platform == "twilio" and body[:1] in (b"[", b"{"):  # Event Streams JSON
        kw.setdefault("content_type", "application/json")
    return normalize(platform, body, **kw)


def path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj
