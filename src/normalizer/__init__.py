"""Switchboard normalizer: platform webhooks → canonical inbound events (docs/contracts.md §4).

Pure code: stdlib + pydantic, no I/O, nothing else of ours imported.

Public API
----------
``normalize(platform, body, *, channel_id, content_type=None, received_at=None,
account_id=None, authenticated=False) -> list[InboundEvent]``: one webhook body → its events,
in body order.
``dump_event(event) -> bytes``: compact JSON (every contract key present, nulls kept).
``EVENT_ADAPTER`` / ``EVENTS_ADAPTER``: validate or dump events (one discriminated union on
``type``). ``json_schema()``: the JSON Schema committed as
``openapi/schemas/inbound-event.schema.json`` (``python -m normalizer.schema``).
``NormalizeError``: the only exception; malformed input (not JSON / not a form, or the wrong
top-level shape). Anything well-formed that we do not understand becomes an ``unsupported``
event with ``data.raw`` kept: nothing a platform sends is dropped. With ``authenticated=True``
(the caller verified the platform's signature, so the body *is* the platform speaking) a
parsed body of an unexpected top-level shape (a Meta body without an ``entry`` array, a
Telegram update without an integer ``update_id``, a Twilio form without ``MessageSid``/
``SmsSid``) is not an error either: it becomes one ``unsupported`` event whose ``raw`` is the
parsed body; ``NormalizeError`` stays for bytes that cannot be parsed at all.

Deterministic ids
-----------------
``id = uuid5(NAMESPACE, "<platform>\\n<channel_id>\\n<key>")`` with these dedup keys:

=========================  ==============================================================
WhatsApp message           ``m:<wamid>`` (edits and revokes: the wamid of the edit/revoke)
WhatsApp status            ``s:<wamid>:<status>`` (the platform's status string)
Messenger/IG message       ``m:<mid>``; unsend ``del:<mid>``; edit ``edit:<mid>:<num_edit>:<ts>``
Messenger/IG postback      ``pb:<mid>`` (older payloads without mid: ``pb:<psid>:<ts>:<payload>``)
Messenger/IG reaction      ``r:<mid>:<action>:<emoji>:<ts>:<psid>`` (mid+action alone would
                           merge two different reactions to the same message)
Messenger/IG delivery/read ``delivered:<mid>`` / ``read:<mid>`` per message id; watermark-only
                           receipts ``<state>:<psid>:<watermark>``
Messenger/IG referral      ``ref:<psid>:<ts>:<ref>``
Telegram                   ``u:<update_id>`` (``u:<update_id>:<n>`` when one update yields
                           several events: deleted_business_messages)
Twilio inbound             ``m:<MessageSid>``
Twilio status callback     ``s:<MessageSid>:<MessageStatus>:<EventType>``
anything else              ``raw:<sha256 of the raw object's JSON>``
authenticated body of an   ``body:<sha256 of the raw body bytes>``
unexpected shape
=========================  ==============================================================

Mapping decisions (where §4 leaves room)
----------------------------------------
* ``time``: the platform's timestamp (UTC, RFC 3339; milliseconds kept for Meta); when the
  platform gives none (Twilio, Telegram callback queries) ``received_at``; else null.
* ``account_id``: from the payload (WhatsApp ``metadata.phone_number_id``, Meta ``entry.id``,
  Twilio our address: ``To`` inbound, ``From`` for status callbacks), else the ``account_id``
  argument (the channel's configured id; Telegram updates never carry the bot id), else null.
* ``conversation_id`` = ``<platform>:<account_id or "-">:<peer or "-">``, where the peer is the
  customer: WhatsApp ``wa_id``/``from`` (status: ``recipient_id``; BSUID ``user_id`` when no
  phone is given), Meta PSID/IGSID (for echoes the recipient), Telegram ``chat.id``, Twilio
  ``From`` inbound / ``To`` in status callbacks; a WhatsApp group message: the ``group_id``.
  Events not about one conversation (template updates, account alerts) have the peer ``-``,
  which keeps them ordered per account; no part is ever empty.
  Treat it as an opaque key: Twilio addresses keep their ``whatsapp:`` prefix, so the
  Twilio form is ``twilio:whatsapp:+1415…:whatsapp:+1650…``.
* ``data.message.kind`` is null only for ``message.deleted``. ``reply`` carries
  button/list/postback/quick-reply/callback payloads (``reply.id`` = payload, ``title`` =
  visible text when known). Reaction removal → ``emoji: ""``. Every media item of a message is
  in ``attachments`` (Messenger attachments, Twilio MMS), the first also in ``media``.
* Additions (documented in ``normalizer.models``): ``message.echo``, ``message.forwarded``,
  ``status.watermark``, ``data.conversation`` (``blocked``, ``referral``) for
  ``conversation.updated``. Telegram ``my_chat_member`` kicked/left → ``blocked: true``,
  member/administrator/creator/restricted → ``blocked: false``.
* Status states: WhatsApp ``played`` → ``read``; Twilio see ``normalizer.twilio.STATES``.
* ``data.raw`` is always the platform's own object for the event (a WhatsApp message or
  status, a Meta messaging event, a Telegram update, the Twilio form as an object).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Final

from pydantic_core import from_json

from . import _common, meta, telegram, twilio, whatsapp
from .errors import NormalizeError
from .models import (
    EVENT_ADAPTER,
    EVENTS_ADAPTER,
    AnyInboundEvent,
    ConversationEvent,
    InboundEvent,
    MessageEvent,
    StatusEvent,
    UnsupportedEvent,
)
from .platforms import PLATFORMS, Platform

__all__ = [
    "EVENTS_ADAPTER",
    "EVENT_ADAPTER",
    "PLATFORMS",
    "AnyInboundEvent",
    "ConversationEvent",
    "InboundEvent",
    "MessageEvent",
    "NormalizeError",
    "Platform",
    "StatusEvent",
    "UnsupportedEvent",
    "dump_event",
    "json_schema",
    "normalize",
]


_JSON_PLATFORMS: Final = {
    "whatsapp": whatsapp.normalize,
    "messenger": meta.normalize,
    "instagram": meta.normalize,
    "telegram": telegram.normalize,
}
NORMALIZED_PLATFORMS: Final = frozenset(_JSON_PLATFORMS) | {"twilio"}
"""Platforms ``normalize`` handles: the JSON ones above plus Twilio's form/event-stream bodies."""


def normalize(
    platform: str,
    body: bytes,
    *,
    channel_id: str,
    content_type: str | None = None,
    received_at: datetime | None = None,
    account_id: str | None = None,
    authenticated: bool = False,
) -> list[InboundEvent]:
    """Turn one raw webhook body into its canonical events (possibly none, e.g. an empty
    ``entry`` list). Raises ``NormalizeError`` for malformed input, and nothing else.

    ``account_id`` is the channel's configured platform account, used when the payload does
    not name it (always for Telegram). ``received_at`` is used as ``time`` when the platform
    sends no timestamp. ``authenticated``: see the module docstring. The output depends only
    on the arguments.
    """
    if platform not in PLATFORMS:
        raise NormalizeError(f"unknown platform {platform[:40]!r}; expected one of {PLATFORMS}")
    if not isinstance(body, bytes | bytearray | memoryview):
        raise NormalizeError(f"{platform}: body must be bytes")
    emitter = _common.Emitter(platform, channel_id, account_id, received_at)
    if platform == "twilio":
        raw = bytes(body)
        if twilio.is_event_stream(content_type):
            twilio.normalize_body(emitter, raw, content_type)
            return emitter.events
        params = twilio.parse_form(raw, content_type)
        if authenticated and not _expected_shape(platform, params):
            return _unexpected(emitter, params, body)
        twilio.normalize(emitter, params)
        return emitter.events
    try:
        doc = _parse_json(body)
    except ValueError as exc:
        reason = str(exc).splitlines()[0] if str(exc) else "invalid"
        raise NormalizeError(f"{platform}: body is not valid JSON ({reason})") from None
    if authenticated and not _expected_shape(platform, doc):
        return _unexpected(emitter, doc, body)
    _JSON_PLATFORMS[platform](emitter, doc)
    return emitter.events


def _expected_shape(platform: str, doc: Any) -> bool:
    """The top-level shape each platform module requires (it raises ``NormalizeError``
    otherwise); everything below that level is handled item by item."""
    if platform == "twilio":
        return bool(doc.get("MessageSid") or doc.get("SmsSid"))
    if type(doc) is not dict:
        return False
    if platform == "telegram":
        return type(doc.get("update_id")) is int
    return type(doc.get("entry")) is list


def _unexpected(
    emitter: _common.Emitter, doc: Any, body: bytes | bytearray | memoryview
) -> list[InboundEvent]:
    """An authenticated body of an unexpected shape: one ``unsupported`` event, kept whole."""
    emitter.unsupported(doc, key="body:" + hashlib.sha256(body).hexdigest())
    return emitter.events


def _parse_json(body: bytes | bytearray | memoryview) -> Any:
    return from_json(
        bytes(body) if type(body) is memoryview else body, allow_inf_nan=False, cache_strings="keys"
    )


def dump_event(event: InboundEvent) -> bytes:
    """Compact JSON bytes of one event (structured-mode CloudEvent)."""
    return event.__pydantic_serializer__.to_json(event)


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of one canonical inbound event."""
    from .schema import json_schema as build

    return build()
