"""Shared helpers: tolerant readers, timestamps, deterministic ids, fast model building.

Each event is assembled as plain dicts and validated once, in Rust, by the concrete event
class's validator (measured: one validation of a whole event is cheaper than building its five
models without validation from Python). Every value passes through the coercing readers below
(``text``, ``ident``, ``num`` …) first, so validation cannot fail on platform input; the
hypothesis tests prove it with ``RAISE_INTERNAL_ERRORS`` on.
"""

from __future__ import annotations

import hashlib
import math
import time as _time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

from pydantic_core import to_json

from .models import (
    ConversationEvent,
    InboundEvent,
    MessageEvent,
    StatusEvent,
    UnsupportedEvent,
)

#: A JSON-shaped part of an event under construction (validated once, with the event).
Part = dict[str, Any]

#: Namespace of every event id: uuid5(NAMESPACE, "<platform>\n<channel_id>\n<dedup key>").
NAMESPACE: Final = "6f0b6c2e-7d1a-5c1e-9a51-5b0f3c1f8e42"
_NS_BYTES: Final = bytes.fromhex(NAMESPACE.replace("-", ""))

#: Set to True by the tests: an internal bug then raises instead of degrading to `unsupported`.
RAISE_INTERNAL_ERRORS = False

_MAX_EPOCH: Final = 253402300799  # 9999-12-31T23:59:59Z

#: Stands for an unknown account or an event about no one conversation in a conversation id
#: (``whatsapp:<account>:-``): no part of the id is ever empty.
NONE: Final = "-"


# --------------------------------------------------------------------------- tolerant readers


def text(value: object) -> str | None:
    """A JSON string, else None."""
    return value if type(value) is str else None


def nonempty(value: object) -> str | None:
    """A non-empty JSON string, else None."""
    return value if type(value) is str and value else None


def ident(value: object) -> str | None:
    """An identifier: a JSON string, or an integer rendered in decimal; else None."""
    if type(value) is str:
        return value
    if type(value) is int and -(10**30) < value < 10**30:
        return str(value)
    return None


def num(value: object) -> float | None:
    """A finite JSON number (or numeric string, as Twilio sends), else None."""
    if type(value) is float:
        return value if math.isfinite(value) else None
    if type(value) is int:
        return float(value) if -(10**300) < value < 10**300 else None
    if type(value) is str and 0 < len(value) < 40:
        try:
            result = float(value)
        except ValueError:
            return None
        return result if math.isfinite(result) else None
    return None


def obj(value: object) -> dict[str, Any]:
    """A JSON object, else an empty one (read-only use)."""
    return value if type(value) is dict else _EMPTY


_EMPTY: Final[dict[str, Any]] = {}


def objects(value: object) -> list[Any]:
    """A JSON array, else an empty one."""
    return value if type(value) is list else []


# --------------------------------------------------------------------------- timestamps


def _epoch(value: object) -> int | None:
    if type(value) is int:
        n = value
    elif type(value) is str:
        if not (0 < len(value) <= 16 and value.isascii() and value.isdigit()):
            return None
        n = int(value)
    elif type(value) is float:
        if not math.isfinite(value):
            return None
        n = int(value)
    else:
        return None
    return n if n >= 0 else None


_SECONDS_CACHE: dict[object, str] = {}


def ts_seconds(value: object) -> str | None:
    """Unix seconds (int or digit string) → RFC 3339 UTC, else None."""
    kind = type(value)
    if kind is str or kind is int:
        hit = _SECONDS_CACHE.get(value)
        if hit is not None:
            return hit
    n = _epoch(value)
    if n is None or n > _MAX_EPOCH:
        return None
    result = _time.strftime("%Y-%m-%dT%H:%M:%SZ", _time.gmtime(n))
    if kind is str or kind is int:
        if len(_SECONDS_CACHE) >= 4096:
            _SECONDS_CACHE.clear()
        _SECONDS_CACHE[value] = result
    return result


def ts_millis(value: object) -> str | None:
    """Unix milliseconds → RFC 3339 UTC with milliseconds, else None."""
    n = _epoch(value)
    if n is None or n > _MAX_EPOCH * 1000 + 999:
        return None
    seconds, millis = divmod(n, 1000)
    return _time.strftime("%Y-%m-%dT%H:%M:%S", _time.gmtime(seconds)) + f".{millis:03d}Z"


def ts_auto(value: object) -> str | None:
    """Meta timestamps are milliseconds; a few Instagram forms carry seconds. Values below
    1e11 (year 5138 in seconds, 1973 in milliseconds) are taken as seconds."""
    n = _epoch(value)
    if n is None:
        return None
    return ts_seconds(n) if n < 100_000_000_000 else ts_millis(n)


def change_key(entry: dict[str, Any], change: object) -> tuple[str, str | None]:
    """Dedup key and time of a Meta ``entry.changes[]`` item we keep as ``unsupported``
    (template status, quality, account updates, Instagram comments, …).

    The change alone is not unique: a template approved, disabled and approved again sends
    the same ``value`` twice. ``entry.time`` (when the change happened) tells them apart, so the
    key covers the entry id, ``entry.time`` and a digest of the change: a redelivery of the same
    body still gets the same id. The time is ``entry.time`` (seconds or milliseconds)."""
    raw_time = entry.get("time")
    digest = hashlib.sha256(to_json(change)).hexdigest()
    key = f"chg:{ident(entry.get('id'))}:{ident(raw_time)}:{digest}"
    return key, ts_auto(raw_time)


def format_received_at(received_at: datetime | None) -> str | None:
    if received_at is None:
        return None
    if received_at.tzinfo is None:
        received_at = received_at.replace(tzinfo=UTC)
    received_at = received_at.astimezone(UTC)
    base = received_at.strftime("%Y-%m-%dT%H:%M:%S")
    if received_at.microsecond:
        return f"{base}.{received_at.microsecond:06d}Z"
    return base + "Z"


# --------------------------------------------------------------------------- building


def contact(
    contact_id: str | None,
    name: str | None = None,
    phone: str | None = None,
    username: str | None = None,
) -> Part | None:
    if contact_id is None:
        return None
    return {"id": contact_id, "name": name, "phone": phone, "username": username}


def media(
    media_id: str | None = None,
    mime_type: str | None = None,
    sha256: str | None = None,
    filename: str | None = None,
    url: str | None = None,
) -> Part:
    return {
        "id": media_id,
        "mime_type": mime_type,
        "sha256": sha256,
        "filename": filename,
        "url": url,
    }


def location(
    lat: float | None, lng: float | None, name: str | None, address: str | None
) -> Part | None:
    if lat is None or lng is None:
        return None
    return {"latitude": lat, "longitude": lng, "name": name, "address": address}


def reply(payload: str | None, title: str | None) -> Part:
    return {"id": payload, "title": title}


def reaction(message_id: str | None, emoji: str) -> Part:
    return {"message_id": message_id, "emoji": emoji}


def status(
    message_id: str | None,
    state: str,
    recipient_id: str | None,
    error: Part | None = None,
    watermark: str | None = None,
) -> Part:
    return {
        "message_id": message_id,
        "state": state,
        "recipient_id": recipient_id,
        "error": error,
        "watermark": watermark,
    }


def message(
    message_id: str | None,
    kind: str | None,
    text: str | None = None,
    *,
    media: Part | None = None,
    location: Part | None = None,
    reply: Part | None = None,
    reaction: Part | None = None,
    reply_to: str | None = None,
    forwarded: bool = False,
    echo: bool = False,
    attachments: list[Part] | None = None,
) -> Part:
    return {
        "id": message_id,
        "kind": kind,
        "text": text,
        "media": media,
        "location": location,
        "reply": reply,
        "reaction": reaction,
        "reply_to": reply_to,
        "attachments": attachments if attachments is not None else [media] if media else [],
        "forwarded": forwarded,
        "echo": echo,
    }


_VALIDATE_MESSAGE = MessageEvent.__pydantic_validator__.validate_python
_VALIDATE_STATUS = StatusEvent.__pydantic_validator__.validate_python
_VALIDATE_CONVERSATION = ConversationEvent.__pydantic_validator__.validate_python
_VALIDATE_UNSUPPORTED = UnsupportedEvent.__pydantic_validator__.validate_python


#: (platform, channel_id) → (CloudEvents source, sha1 state over namespace + id prefix).
_CHANNELS: dict[tuple[str, str], tuple[str, Any]] = {}
_VARIANT: Final = {h: "89ab"[int(h, 16) & 3] for h in "0123456789abcdef"}


class Emitter:
    """Collects the events of one webhook for one platform and channel."""

    __slots__ = (
        "_id_hash",
        "_received",
        "account_id",
        "channel_id",
        "events",
        "platform",
        "received_at",
        "source",
    )

    def __init__(
        self,
        platform: str,
        channel_id: str,
        account_id: str | None,
        received_at: datetime | None,
    ) -> None:
        self.platform = platform
        self.channel_id = channel_id
        self.account_id = account_id
        self.received_at = received_at
        self._received: str | None = None
        cached = _CHANNELS.get((platform, channel_id))
        if cached is None:
            prefix = f"{platform}\n{channel_id}\n".encode("utf-8", "surrogatepass")
            cached = (
                f"/switchboard/{platform}/{channel_id}",
                hashlib.sha1(_NS_BYTES + prefix, usedforsecurity=False),
            )
            if len(_CHANNELS) >= 4096:
                _CHANNELS.clear()
            _CHANNELS[(platform, channel_id)] = cached
        self.source: str = cached[0]
        self._id_hash: Any = cached[1]
        self.events: list[InboundEvent] = []

    def event_id(self, key: str) -> str:
        """uuid5(NAMESPACE, f"{platform}\\n{channel_id}\\n{key}") as a string."""
        h = self._id_hash.copy()
        try:
            h.update(key.encode())
        except UnicodeEncodeError:  # pragma: no cover - keys come from decoded JSON/forms
            h.update(key.encode("utf-8", "surrogatepass"))
        x = h.hexdigest()
        # RFC 4122 version 5: version nibble 5, variant bits 10.
        return f"{x[:8]}-{x[8:12]}-5{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:32]}"

    def _time(self, time: str | None) -> str | None:
        if time is not None:
            return time
        if self._received is None and self.received_at is not None:
            self._received = format_received_at(self.received_at)
        return self._received

    def _emit(
        self,
        validate: Callable[[Any], Any],
        event_type: str,
        key: str,
        time: str | None,
        account_id: str | None,
        peer: str | None,
        contact: Part | None,
        message: Part | None,
        status: Part | None,
        conversation: Part | None,
        raw: object,
    ) -> None:
        account_id = account_id or self.account_id
        conv = f"{self.platform}:{account_id or NONE}:{peer or NONE}"
        self.events.append(
            validate(
                {
                    "specversion": "1.0",
                    "id": self.event_id(key),
                    "source": self.source,
                    "type": event_type,
                    "time": time if time is not None else self._time(None),
                    "subject": conv,
                    "datacontenttype": "application/json",
                    "data": {
                        "platform": self.platform,
                        "channel_id": self.channel_id,
                        "account_id": account_id,
                        "conversation_id": conv,
                        "contact": contact,
                        "message": message,
                        "status": status,
                        "conversation": conversation,
                        "raw": raw,
                    },
                }
            )
        )

    def message(
        self,
        event_type: str,
        key: str,
        time: str | None,
        account_id: str | None,
        peer: str | None,
        contact: Part | None,
        message: Part,
        raw: object,
    ) -> None:
        self._emit(
            _VALIDATE_MESSAGE,
            event_type,
            key,
            time,
            account_id,
            peer,
            contact,
            message,
            None,
            None,
            raw,
        )

    def status(
        self,
        key: str,
        time: str | None,
        account_id: str | None,
        peer: str | None,
        contact: Part | None,
        status: Part,
        raw: object,
    ) -> None:
        self._emit(
            _VALIDATE_STATUS,
            "message.status",
            key,
            time,
            account_id,
            peer,
            contact,
            None,
            status,
            None,
            raw,
        )

    def conversation(
        self,
        key: str,
        time: str | None,
        account_id: str | None,
        peer: str | None,
        contact: Part | None,
        update: Part,
        raw: object,
    ) -> None:
        self._emit(
            _VALIDATE_CONVERSATION,
            "conversation.updated",
            key,
            time,
            account_id,
            peer,
            contact,
            None,
            None,
            update,
            raw,
        )

    def unsupported(
        self,
        raw: object,
        *,
        key: str | None = None,
        time: str | None = None,
        account_id: str | None = None,
        peer: str | None = None,
        contact: Part | None = None,
    ) -> None:
        """An event we do not understand: kept whole in ``raw``. Without a platform key the
        dedup key is a digest of the raw object, so a redelivery gets the same id."""
        if key is None:
            key = "raw:" + hashlib.sha256(to_json(raw)).hexdigest()
        self._emit(
            _VALIDATE_UNSUPPORTED,
            "unsupported",
            key,
            time,
            account_id,
            peer,
            contact,
            None,
            None,
            None,
            raw,
        )

    def guarded(self, handler: Callable[..., None], item: object, *args: Any) -> None:
        """Run one item's handler; a bug in it degrades that item to ``unsupported``
        (raw kept) instead of failing the whole webhook. Tests turn this off."""
        mark = len(self.events)
        try:
            handler(self, item, *args)
        except Exception:
            if RAISE_INTERNAL_ERRORS:
                raise
            del self.events[mark:]
            self.unsupported(item)
