"""Twilio Programmable Messaging webhooks (SMS, MMS, WhatsApp via Twilio) → canonical events.

Bodies are ``application/x-www-form-urlencoded``. A request with ``MessageStatus`` (or an
``SmsStatus``) other than ``received``/``receiving`` is a status callback for one of our
outbound messages; anything else is an inbound message.

Addresses are kept verbatim, including a channel prefix such as ``whatsapp:+14155238886``:
the same number may serve SMS and WhatsApp, and the prefixed form is what the send API takes
as ``To``. ``contact.phone`` is the bare E.164 number. The business account is ``To`` for
inbound messages and ``From`` for status callbacks, so both land on the same conversation id
``twilio:<our address>:<their address>``. Inbound forms carry no timestamp: ``time`` is the
receipt time given by the caller; status callbacks with ``RawDlrDoneDate`` (the carrier's
delivery report time, ``YYMMDDhhmm``, taken as UTC) use it.

MMS with several media keep every item in ``message.attachments`` (``MediaUrl{N}`` /
``MediaContentType{N}``, the first also in ``message.media``; ``media.id`` is
``<MessageSid>:<MediaSid>`` from the URL, which the media proxy resolves). The kind follows Twilio's
``MessageType`` when it names one (WhatsApp senders: a shared contact is ``contacts`` even
though its media is a vCard document), else the first media's content type.

JSON bodies (``application/json``, signed with ``bodySHA256``) are Event Streams webhook-sink
deliveries: a CloudEvents array (or one event). ``com.twilio.messaging.inbound-message.received``
becomes ``message.received``, ``com.twilio.messaging.message.<status>`` a ``message.status``;
every other event type is ``unsupported`` with the event in ``raw`` and its CloudEvents id as
key (https://www.twilio.com/docs/events/event-types/messaging/inbound-message and
``…/outbound-message``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl

from pydantic_core import from_json

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
_JSON: Final = "application/json"
#: ``MessageType`` values that name a canonical kind of their own.
_MESSAGE_TYPES: Final = frozenset({"image", "video", "audio", "document", "sticker", "contacts"})
_VCARD: Final = frozenset({"text/vcard", "text/x-vcard", "text/directory"})
_ES_PREFIX: Final = "com.twilio.messaging."


def normalize_body(em: c.Emitter, body: bytes, content_type: str | None) -> None:
    """Form bodies (webhooks, status callbacks) or JSON bodies (Event Streams)."""
    if is_event_stream(content_type):
        try:
            doc = from_json(body, allow_inf_nan=False)
        except ValueError:
            raise NormalizeError("twilio: body is not valid JSON") from None
        normalize_json(em, doc)
        return
    normalize(em, parse_form(body, content_type))


def is_event_stream(content_type: str | None) -> bool:
    """A JSON body: Twilio Event Streams (CloudEvents), not a form webhook."""
    return content_type is not None and _media_type(content_type) == _JSON


def _media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def parse_form(body: bytes, content_type: str | None) -> dict[str, str]:
    if content_type is not None and _media_type(content_type) != _FORM:
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
    em.status(key, _dlr_time(p.get("RawDlrDoneDate")), sender, to, person, status, p)


def _dlr_time(value: str | None) -> str | None:
    if value is None or len(value) != 10 or not value.isdigit():
        return None
    try:
        when = datetime.strptime(value, "%y%m%d%H%M").replace(tzinfo=UTC)
    except ValueError:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:00Z")


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
    items: list[c.Part] = []
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
        items = [
            _media_item(p.get(f"MediaUrl{n}") or None, p.get(f"MediaContentType{n}") or None)
            for n in range(min(num_media, 100))
            if f"MediaUrl{n}" in p or f"MediaContentType{n}" in p
        ]
        media = items[0]
        kind = _media_kind(media["mime_type"], p.get("MessageType"))
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
        attachments=items if media is not None else [],
    )
    em.message("message.received", f"m:{sid}", None, to, sender, person, message, p)


def _wa_phone(p: dict[str, str]) -> str | None:
    wa_id = p.get("WaId")
    return "+" + wa_id if wa_id and wa_id.isascii() and wa_id.isdigit() else None


def _media_item(url: str | None, mime: str | None) -> c.Part:
    """``media.id`` is ``<MessageSid>:<MediaSid>`` from the URL's path (``…/Messages/{sid}/
    Media/{sid}``), which the media proxy turns back into the URL; the URL itself needs the
    account's credentials."""
    parts = url.split("?", 1)[0].rstrip("/").split("/") if url else []
    media_id = None
    if len(parts) >= 4 and parts[-2] == "Media" and parts[-4] == "Messages":
        media_id = f"{parts[-3]}:{parts[-1]}"
    return c.media(media_id, mime, url=url)


def _media_kind(mime: str | None, message_type: str | None) -> str:
    if message_type in _MESSAGE_TYPES:
        return message_type
    if mime is None:
        return "document"
    if mime.split(";", 1)[0].strip().lower() in _VCARD:
        return "contacts"
    major = mime.split("/", 1)[0].lower()
    if major == "image":
        return "image"
    if major == "video":
        return "video"
    if major == "audio":
        return "audio"
    return "document"


# --------------------------------------------------------------------------- Event Streams


def normalize_json(em: c.Emitter, doc: Any) -> None:
    events = doc if type(doc) is list else [doc] if type(doc) is dict else None
    if events is None:
        raise NormalizeError("twilio: JSON body must be a CloudEvent or an array of them")
    for event in events:
        em.guarded(_cloud_event, event)


def _iso_time(value: object) -> str | None:
    if type(value) is not str or not 10 <= len(value) <= 40:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return c.format_received_at(when)


def _cloud_event(em: c.Emitter, event: Any) -> None:
    if type(event) is not dict:
        em.unsupported(event)
        return
    etype = c.text(event.get("type")) or ""
    data = c.obj(event.get("data"))
    sid = c.text(data.get("messageSid"))
    sender, to = c.text(data.get("from")) or None, c.text(data.get("to")) or None
    time = _iso_time(data.get("timestamp")) or _iso_time(event.get("time"))
    if sid and etype == _ES_PREFIX + "inbound-message.received":
        person = c.contact(sender, phone=_phone(sender))
        body = c.text(data.get("body"))
        message = c.message(sid, "text" if body is not None else "unsupported", body)
        em.message("message.received", f"m:{sid}", time, to, sender, person, message, event)
        return
    platform_state = (c.text(data.get("messageStatus")) or "").lower()
    state = STATES.get(platform_state)
    if sid and state is not None and etype.startswith(_ES_PREFIX + "message."):
        code = c.ident(data.get("errorCode"))
        status = {
            "message_id": sid,
            "state": state,
            "recipient_id": to,
            "error": {"code": code, "title": None, "detail": None} if code else None,
            "watermark": None,
        }
        key = f"s:{sid}:{platform_state}:"
        em.status(key, time, sender, to, c.contact(to, phone=_phone(to)), status, event)
        return
    event_id = c.text(event.get("id"))
    em.unsupported(event, key=f"es:{event_id}" if event_id else None, time=time)
