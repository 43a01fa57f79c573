"""Twilio Programmable Messaging webhooks (SMS, MMS, WhatsApp via Twilio) → canonical events.

Bodies are ``application/x-www-form-urlencoded``. A request with ``MessageStatus`` (or an
``SmsStatus``) other than ``received``/``receiving`` is a status callback for one of our
outbound messages; anything else is an inbound message.

Addresses are kept verbatim, including a channel prefix such as ``whatsapp:+14155238886``:
the same number may serve SMS and WhatsApp, and the prefixed form is what the send API takes
as ``To``. ``contact.phone`` is the bare E.164 number. The business account is ``To`` for
inbound messages and ``From`` for status callbacks, so both land on the same conversation id
``twilio:<our address>:<their address>``. Twilio sends no timestamp: ``time`` is the
receipt time given by the caller.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import parse_qsl

from . import _common as c
from .errors import NormalizeError

#: Twilio ``MessageStatus`` → canonical state. ``queued``/``accepted``/``scheduled``/
#: ``sending`` mean Twilio has accepted the message for delivery, which is what our outbound
#: lifecycle calls ``sent`` (the platform took it); the monotonic state machine downstream
#: ignores them once a later state is known. ``undelivered`` and ``canceled`` are terminal
#: non-deliveries → ``failed``. ``partially_delivered`` and unknown values → ``unsupported``
#: (kept in ``raw``).
STATES: Final = {
    "queued": "sent",
    "accepted": "sent",
    "scheduled": "sent",
    "sending": "sent",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "undelivered": "failed",
    "failed": "failed",
    "canceled": "failed",
}

_INBOUND: Final = frozenset({"received", "receiving"})
_FORM: Final = "application/x-www-form-urlencoded"


def parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    if content_type is not None and content_type.split(";", 1)[0].strip().lower() != _FORM:
        raise NormalizeError(f"twilio: expected {_FORM} body, got another content type")
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=10_000)
    except UnicodeDecodeError:
        raise NormalizeError("twilio: body is not UTF-8 form data") from None
    except ValueError:
        raise NormalizeError("twilio: body has too many form fields") from None
    return dict(pairs)


def normalize(em: c.Emitter, params: dict[str, str]) -> None:
    sid = params.get("MessageSid") or params.get("SmsSid")
    if not sid:
        raise NormalizeError("twilio: form has no MessageSid or SmsSid")
    em.guarded(_params, params, sid)


def _phone(address: str | None) -> str | None:
    if not address:
        return None
    number = address.rpartition(":")[2]
    return number if number.startswith("+") and number[1:].isdigit() else None


def _params(em: c.Emitter, p: dict[str, str], sid: str) -> None:
    sender = p.get("From") or None
    to = p.get("To") or None
    platform_state = p.get("MessageStatus") or p.get("SmsStatus")
    if platform_state is None or platform_state in _INBOUND:
        _inbound(em, p, sid, sender, to)
        return
    person = c.contact(to, phone=_phone(to))
    state = STATES.get(platform_state)
    key = f"s:{sid}:{platform_state}:{p.get('EventType', '')}"
    if state is None:
        em.unsupported(p, key=key, account_id=sender, peer=to, contact=person)
        return
    code = p.get("ErrorCode") or None
    error = None
    if code is not None:
        error = {
            "code": code,
            "title": p.get("ErrorMessage") or p.get("ChannelStatusMessage") or None,
            "detail": None,
        }
    status = {
        "message_id": sid,
        "state": state,
        "recipient_id": to,
        "error": error,
        "watermark": None,
    }
    em.status(key, None, sender, to, person, status, p)


def _inbound(
    em: c.Emitter, p: dict[str, str], sid: str, sender: str | None, to: str | None
) -> None:
    person = c.contact(
        sender, name=p.get("ProfileName") or None, phone=_phone(sender) or _wa_phone(p)
    )
    body = p.get("Body")
    kind = "text"
    text = body
    media = location = reply = None
    try:
        num_media = int(p.get("NumMedia") or "0")
    except ValueError:
        num_media = 0
    lat, lng = c.num(p.get("Latitude")), c.num(p.get("Longitude"))
    if p.get("ButtonPayload") or p.get("ButtonText"):
        kind = "reply"
        reply = {"id": p.get("ButtonPayload") or None, "title": p.get("ButtonText") or None}
        text = None
    elif lat is not None and lng is not None:
        kind = "location"
        location = {
            "latitude": lat,
            "longitude": lng,
            "name": p.get("Label") or None,
            "address": p.get("Address") or None,
        }
        text = None
    elif num_media > 0 and ("MediaUrl0" in p or "MediaContentType0" in p):
        mime = p.get("MediaContentType0") or None
        kind = _media_kind(mime, p.get("MessageType"))
        media = c.media(mime_type=mime, url=p.get("MediaUrl0") or None)
        text = body or None
    elif body is None:
        kind = "unsupported"
    message = c.message(
        sid,
        kind,
        text,
        media=media,
        location=location,
        reply=reply,
        reply_to=p.get("OriginalRepliedMessageSid") or None,
        forwarded=p.get("Forwarded") == "true" or p.get("FrequentlyForwarded") == "true",
    )
    em.message("message.received", f"m:{sid}", None, to, sender, person, message, p)


def _wa_phone(p: dict[str, str]) -> str | None:
    wa_id = p.get("WaId")
    return "+" + wa_id if wa_id and wa_id.isascii() and wa_id.isdigit() else None


def _media_kind(mime: str | None, message_type: str | None) -> str:
    if message_type == "sticker":
        return "sticker"
    if mime is None:
        return "document"
    major = mime.split("/", 1)[0].lower()
    if major == "image":
        return "image"
    if major == "video":
        return "video"
    if major == "audio":
        return "audio"
    return "document"
