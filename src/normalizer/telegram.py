"""Telegram Bot API updates → canonical events.

An update carries at most one payload field. The bot's own id is not in updates: the caller
passes the channel's configured ``account_id``. The conversation is the chat (``chat.id``:
positive for private chats, negative for groups and channels); the contact is the sender:
``sender_chat`` when the message was sent on behalf of a chat (channel posts, anonymous group
admins, a linked channel's automatic forwards, where ``from`` is only a placeholder user such
as GroupAnonymousBot or 777000), else ``from``, else the chat.
"""

from __future__ import annotations

from typing import Any, Final

from . import _common as c
from .errors import NormalizeError

#: Update field → event type, for fields that carry a ``Message``.
MESSAGE_FIELDS: Final = {
    "message": "message.received",
    "channel_post": "message.received",
    "business_message": "message.received",
    "edited_message": "message.edited",
    "edited_channel_post": "message.edited",
    "edited_business_message": "message.edited",
}

#: ``my_chat_member.new_chat_member.status`` → ``data.conversation.blocked``.
#: kicked/left: the user blocked the bot (private chat) or removed it (group) → true.
BLOCKED_BY_STATUS: Final = {
    "kicked": True,
    "left": True,
    "member": False,
    "administrator": False,
    "creator": False,
    "restricted": False,
}

# Checked in this order: a venue also carries `location`, an animation also `document`.
_MEDIA_FIELDS: Final = (
    ("animation", "video"),
    ("video", "video"),
    ("video_note", "video"),
    ("audio", "audio"),
    ("voice", "voice"),
    ("document", "document"),
    ("sticker", "sticker"),
)


def normalize(em: c.Emitter, doc: Any) -> None:
    if type(doc) is not dict or type(doc.get("update_id")) is not int:
        raise NormalizeError("telegram: body must be a JSON object with an integer 'update_id'")
    update_id = doc["update_id"]
    em.guarded(_update, doc, update_id)


def _update(em: c.Emitter, doc: dict[str, Any], update_id: int) -> None:
    key = f"u:{update_id}"
    for field, event_type in MESSAGE_FIELDS.items():
        m = doc.get(field)
        if type(m) is dict:
            _message(em, key, event_type, m, doc)
            return
    if type(doc.get("callback_query")) is dict:
        _callback(em, key, doc["callback_query"], doc)
    elif type(doc.get("my_chat_member")) is dict:
        _my_chat_member(em, key, doc["my_chat_member"], doc)
    elif type(doc.get("message_reaction")) is dict:
        _reaction(em, key, doc["message_reaction"], doc)
    elif type(doc.get("deleted_business_messages")) is dict:
        deleted = doc["deleted_business_messages"]
        chat_id = c.ident(c.obj(deleted.get("chat")).get("id"))
        person = _chat_contact(c.obj(deleted.get("chat")))
        for index, message_id in enumerate(c.objects(deleted.get("message_ids"))):
            body = c.message(c.ident(message_id), None)
            em.message("message.deleted", f"{key}:{index}", None, None, chat_id, person, body, doc)
    else:  # inline_query, poll, chat_member, chat_join_request, …: keep who and where
        part = next((v for v in doc.values() if type(v) is dict), {})
        user = c.obj(part.get("from")) or c.obj(part.get("user"))
        chat_id = c.ident(c.obj(part.get("chat")).get("id")) or c.ident(user.get("id"))
        em.unsupported(doc, key=key, peer=chat_id, contact=_user_contact(user))


def _user_contact(user: dict[str, Any]) -> c.Part | None:
    first, last = c.text(user.get("first_name")), c.text(user.get("last_name"))
    name = f"{first} {last}" if first and last else first or last
    return c.contact(c.ident(user.get("id")), name=name, username=c.text(user.get("username")))


def _chat_contact(chat: dict[str, Any]) -> c.Part | None:
    if chat.get("type") == "private":
        return _user_contact(chat)
    return c.contact(
        c.ident(chat.get("id")),
        name=c.text(chat.get("title")),
        username=c.text(chat.get("username")),
    )


def _sender(m: dict[str, Any]) -> c.Part | None:
    # Bot API: for a message sent on behalf of a chat, ``from`` "contains a fake sender user in
    # non-channel chats"; ``sender_chat`` is the real sender.
    if type(m.get("sender_chat")) is dict:
        return _chat_contact(m["sender_chat"])
    if type(m.get("from")) is dict:
        return _user_contact(m["from"])
    return _chat_contact(c.obj(m.get("chat")))


def _message(
    em: c.Emitter, key: str, event_type: str, m: dict[str, Any], doc: dict[str, Any]
) -> None:
    chat_id = c.ident(c.obj(m.get("chat")).get("id"))
    edited = event_type == "message.edited"
    time = c.ts_seconds(m.get("edit_date") if edited else m.get("date")) or c.ts_seconds(
        m.get("date")
    )
    body = _body(m, c.ident(m.get("message_id")))
    em.message(event_type, key, time, None, chat_id, _sender(m), body, doc)


def _body(m: dict[str, Any], message_id: str | None) -> Any:
    text = c.text(m.get("text"))
    kind = "text" if text is not None else "unsupported"
    media = location = None
    if text is None:
        text = c.text(m.get("caption"))
        photos = m.get("photo")
        if type(photos) is list and photos and type(photos[-1]) is dict:
            kind = "image"  # sizes ascend: the last one is the largest
            media = c.media(c.text(photos[-1].get("file_id")))
        else:
            for field, field_kind in _MEDIA_FIELDS:
                part = m.get(field)
                if type(part) is dict:
                    kind = field_kind
                    media = c.media(
                        c.text(part.get("file_id")),
                        c.text(part.get("mime_type")),
                        filename=c.text(part.get("file_name")),
                    )
                    break
            else:
                venue = c.obj(m.get("venue"))
                point = c.obj(venue.get("location")) if venue else c.obj(m.get("location"))
                if point:
                    kind = "location"
                    lat, lng = c.num(point.get("latitude")), c.num(point.get("longitude"))
                    if lat is not None and lng is not None:
                        location = {
                            "latitude": lat,
                            "longitude": lng,
                            "name": c.text(venue.get("title")),
                            "address": c.text(venue.get("address")),
                        }
                elif type(m.get("contact")) is dict:
                    kind = "contacts"
    return c.message(
        message_id,
        kind,
        text,
        media=media,
        location=location,
        reply_to=c.ident(c.obj(m.get("reply_to_message")).get("message_id")),
        forwarded="forward_origin" in m or "forward_date" in m,
    )


def _button_title(m: dict[str, Any], data: str | None) -> str | None:
    """The text of the inline button whose ``callback_data`` was chosen, when visible."""
    if data is None:
        return None
    for row in c.objects(c.obj(m.get("reply_markup")).get("inline_keyboard")):
        for button in c.objects(row):
            if type(button) is dict and button.get("callback_data") == data:
                return c.text(button.get("text"))
    return None


def _callback(em: c.Emitter, key: str, cq: dict[str, Any], doc: dict[str, Any]) -> None:
    user = c.obj(cq.get("from"))
    m = c.obj(cq.get("message"))
    chat_id = c.ident(c.obj(m.get("chat")).get("id")) or c.ident(user.get("id"))
    data = c.text(cq.get("data"))
    reply = None
    if data is not None:
        reply = {"id": data, "title": _button_title(m, data)}
    body = c.message(
        c.text(cq.get("id")),
        "reply" if reply is not None else "unsupported",
        reply=reply,
        reply_to=c.ident(m.get("message_id")),
    )
    em.message("message.received", key, None, None, chat_id, _user_contact(user), body, doc)


def _my_chat_member(em: c.Emitter, key: str, upd: dict[str, Any], doc: dict[str, Any]) -> None:
    chat = c.obj(upd.get("chat"))
    chat_id = c.ident(chat.get("id"))
    status = c.obj(upd.get("new_chat_member")).get("status")
    blocked = BLOCKED_BY_STATUS.get(status) if type(status) is str else None
    time = c.ts_seconds(upd.get("date"))
    person = _user_contact(c.obj(upd.get("from")))
    if blocked is None:
        em.unsupported(doc, key=key, time=time, peer=chat_id, contact=person)
        return
    update = {"blocked": blocked, "referral": None}
    em.conversation(key, time, None, chat_id, person, update, doc)


def _reaction(em: c.Emitter, key: str, upd: dict[str, Any], doc: dict[str, Any]) -> None:
    chat = c.obj(upd.get("chat"))
    new = c.objects(upd.get("new_reaction"))
    emojis = [i["emoji"] for i in new if type(i) is dict and type(i.get("emoji")) is str]
    if new and not emojis:  # only custom-emoji / paid reactions: no canonical form
        em.unsupported(
            doc, key=key, time=c.ts_seconds(upd.get("date")), peer=c.ident(chat.get("id"))
        )
        return
    emoji = emojis[0] if emojis else ""  # an empty new_reaction list: reaction removed
    reaction = {"message_id": c.ident(upd.get("message_id")), "emoji": emoji}
    if type(upd.get("user")) is dict:
        person = _user_contact(upd["user"])
    else:
        person = _chat_contact(c.obj(upd.get("actor_chat")) or chat)
    body = c.message(None, "reaction", reaction=reaction)
    em.message(
        "message.received",
        key,
        c.ts_seconds(upd.get("date")),
        None,
        c.ident(chat.get("id")),
        person,
        body,
        doc,
    )
