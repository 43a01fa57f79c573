"""WhatsApp Business Cloud API webhooks → canonical events.

Every ``entry[]``, ``changes[]``, ``messages[]``, ``statuses[]`` and ``errors[]`` is read.
``field: messages`` and ``field: smb_message_echoes`` are understood; every other field
(template updates, account alerts, …) becomes one ``unsupported`` event carrying the change,
timed and keyed by ``entry.time`` (the same change may recur: approved, disabled, approved).
"""

from __future__ import annotations

from typing import Any, Final

from . import _common as c
from .errors import NormalizeError

_MEDIA: Final = frozenset({"image", "video", "audio", "document", "sticker"})

#: WhatsApp status → canonical state. ``played`` (a voice note was played) implies ``read``.
STATES: Final = {
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
    "played": "read",
    "failed": "failed",
    "deleted": "deleted",
}


def normalize(em: c.Emitter, doc: Any) -> None:
    entries = doc.get("entry") if type(doc) is dict else None
    if type(entries) is not list:
        raise NormalizeError("whatsapp: body must be a JSON object with an 'entry' array")
    for entry in entries:
        changes = entry.get("changes") if type(entry) is dict else None
        if type(changes) is not list:
            em.unsupported(entry)
            continue
        for change in changes:
            em.guarded(_change, change, entry)


def _change(em: c.Emitter, change: Any, entry: dict[str, Any]) -> None:
    if type(change) is not dict:
        em.unsupported(change)
        return
    value = change.get("value")
    field = change.get("field")
    if type(value) is not dict:
        em.unsupported(change)
        return
    account = c.ident(c.obj(value.get("metadata")).get("phone_number_id"))
    handled = False
    if field == "messages":
        contacts = c.objects(value.get("contacts"))
        messages = value.get("messages")
        if type(messages) is list:
            handled = True
            for m in messages:
                em.guarded(_message, m, account, contacts, False)
        statuses = value.get("statuses")
        if type(statuses) is list:
            handled = True
            for s in statuses:
                em.guarded(_status, s, account)
    elif field == "smb_message_echoes":
        echoes = value.get("message_echoes")
        if type(echoes) is list:
            handled = True
            for m in echoes:
                em.guarded(_message, m, account, [], True)
    errors = value.get("errors")
    if type(errors) is list:
        handled = True
        for err in errors:
            em.unsupported(err, account_id=account)
    if not handled:
        key, time = c.change_key(entry, change)
        em.unsupported(change, key=key, time=time, account_id=account)


def _phone(number: str | None) -> str | None:
    if number and number.isascii() and number.isdigit():
        return "+" + number
    return None


def _contact(contacts: list[Any], wa_from: str | None, user_id: str | None) -> c.Part | None:
    """Match ``value.contacts[]`` to the sender by ``wa_id`` (or business-scoped ``user_id``)."""
    found: dict[str, Any] | None = None
    for entry in contacts:
        if type(entry) is not dict:
            continue
        wa_id = c.ident(entry.get("wa_id"))
        uid = c.text(entry.get("user_id"))
        if (wa_from is not None and wa_id == wa_from) or (user_id is not None and uid == user_id):
            found = entry
            break
    if found is None:
        if len(contacts) == 1 and type(contacts[0]) is dict and wa_from is None and user_id is None:
            found = contacts[0]
        else:
            return c.contact(wa_from or user_id, phone=_phone(wa_from))
    wa_id = c.ident(found.get("wa_id"))
    profile = c.obj(found.get("profile"))
    return c.contact(
        wa_id or wa_from or c.text(found.get("user_id")) or user_id,
        name=c.text(profile.get("name")),
        phone=_phone(wa_from or wa_id),
        username=c.text(profile.get("username")),
    )


def _message(em: c.Emitter, m: Any, account: str | None, contacts: list[Any], echo: bool) -> None:
    if type(m) is not dict:
        em.unsupported(m, account_id=account)
        return
    mid = c.text(m.get("id"))
    key = f"m:{mid}" if mid is not None else None
    time = c.ts_seconds(m.get("timestamp"))
    if echo:
        to = c.ident(m.get("to"))
        person = c.contact(to or c.text(m.get("to_user_id")), phone=_phone(to))
    else:
        person = _contact(contacts, c.ident(m.get("from")), c.text(m.get("from_user_id")))
    # A group message belongs to the group's conversation (the id a send to the group takes and
    # its statuses carry as recipient_id); the contact stays the participant who wrote it.
    peer = c.ident(m.get("group_id")) or (person["id"] if person is not None else None)
    kind = m.get("type")
    if key is None:
        em.unsupported(m, time=time, account_id=account, peer=peer, contact=person)
        return
    if kind == "edit":
        edit = c.obj(m.get("edit"))
        inner = c.obj(edit.get("message"))
        body = _body(inner, c.text(edit.get("original_message_id")), echo)
        em.message("message.edited", key, time, account, peer, person, body, m)
    elif kind == "revoke":
        original = c.text(c.obj(m.get("revoke")).get("original_message_id"))
        body = c.message(original, None, echo=echo)
        em.message("message.deleted", key, time, account, peer, person, body, m)
    else:
        em.message("message.received", key, time, account, peer, person, _body(m, mid, echo), m)


def _body(m: dict[str, Any], mid: str | None, echo: bool) -> Any:
    kind = c.text(m.get("type"))
    text: str | None = None
    media = location = reply = reaction = None
    out = "unsupported"
    if kind == "text":
        out = "text"
        text = c.text(c.obj(m.get("text")).get("body"))
    elif kind in _MEDIA or kind == "voice":  # ``voice``: the legacy type of voice notes
        part = c.obj(m.get(kind))
        out = "voice" if kind == "voice" or part.get("voice") is True else kind
        text = c.nonempty(part.get("caption"))
        media = c.media(
            c.ident(part.get("id")),
            c.text(part.get("mime_type")),
            c.text(part.get("sha256")),
            c.text(part.get("filename")),
            c.text(part.get("url")),
        )
    elif kind == "location":
        out = "location"
        part = c.obj(m.get("location"))
        lat, lng = c.num(part.get("latitude")), c.num(part.get("longitude"))
        if lat is not None and lng is not None:
            location = {
                "latitude": lat,
                "longitude": lng,
                "name": c.text(part.get("name")),
                "address": c.text(part.get("address")),
            }
    elif kind == "contacts":
        out = "contacts"
    elif kind == "interactive":
        part = c.obj(m.get("interactive"))
        sub = part.get("type")
        if sub == "button_reply" or sub == "list_reply":
            choice = c.obj(part.get(sub))
            out = "reply"
            reply = {"id": c.ident(choice.get("id")), "title": c.text(choice.get("title"))}
        else:  # nfm_reply (Flows), call_permission_reply, …: kept in raw
            text = c.text(c.obj(part.get(sub)).get("body")) if type(sub) is str else None
    elif kind == "button":
        part = c.obj(m.get("button"))
        out = "reply"
        reply = {"id": c.text(part.get("payload")), "title": c.text(part.get("text"))}
    elif kind == "reaction":
        part = c.obj(m.get("reaction"))
        out = "reaction"
        reaction = {
            "message_id": c.text(part.get("message_id")),
            "emoji": c.text(part.get("emoji")) or "",
        }
    elif kind == "order":
        out = "order"
        text = c.nonempty(c.obj(m.get("order")).get("text"))
    elif kind == "system":
        text = c.text(c.obj(m.get("system")).get("body"))
    context = c.obj(m.get("context"))
    return c.message(
        mid,
        out,
        text,
        media=media,
        location=location,
        reply=reply,
        reaction=reaction,
        reply_to=c.text(context.get("id")),
        forwarded=context.get("forwarded") is True or context.get("frequently_forwarded") is True,
        echo=echo,
    )


def _status(em: c.Emitter, s: Any, account: str | None) -> None:
    if type(s) is not dict:
        em.unsupported(s, account_id=account)
        return
    sid = c.text(s.get("id"))
    platform_state = c.text(s.get("status"))
    recipient = c.ident(s.get("recipient_id")) or c.text(s.get("recipient_user_id"))
    time = c.ts_seconds(s.get("timestamp"))
    person = c.contact(recipient)
    state = STATES.get(platform_state) if platform_state is not None else None
    key = f"s:{sid}:{platform_state}"
    # A message to a group gets one receipt per participant, all with the same id and status.
    participant = c.ident(s.get("recipient_participant_id")) or c.text(
        s.get("recipient_participant_user_id")
    )
    if participant is not None:
        key = f"{key}:{participant}"
    if sid is None or state is None:
        em.unsupported(
            s,
            key=key if sid else None,
            time=time,
            account_id=account,
            peer=recipient,
            contact=person,
        )
        return
    error = None
    for err in c.objects(s.get("errors")):
        if type(err) is dict:
            error = {
                "code": c.ident(err.get("code")),
                "title": c.text(err.get("title")),
                "detail": c.text(c.obj(err.get("error_data")).get("details"))
                or c.text(err.get("message")),
            }
            break
    status = {
        "message_id": sid,
        "state": state,
        "recipient_id": recipient,
        "error": error,
        "watermark": None,
        "pricing": _pricing(s.get("pricing")),
    }
    em.status(key, time, account, recipient, person, status, s)


def _pricing(value: object) -> c.Part | None:
    if type(value) is not dict:
        return None
    billable = value.get("billable")
    return {
        "category": c.text(value.get("category")),
        "billable": billable if type(billable) is bool else None,
        "model": c.text(value.get("pricing_model")),
    }
