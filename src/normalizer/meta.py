"""Messenger and Instagram messaging webhooks → canonical events.

Reads ``entry[].messaging[]`` and ``entry[].standby[]`` (handover protocol: the same events,
seen while another app controls the thread), and Instagram's ``entry[].changes[]`` form where
``field == "messages"`` carries a messaging event as ``value``. Other changes (comments,
mentions, …) become ``unsupported`` events.
"""

from __future__ import annotations

import base64
from typing import Any, Final

from . import _common as c
from .errors import NormalizeError

#: ``media.id`` of an attachment with a URL is ``url_media_id(url)``, the id the media proxy
#: (``GET /v1/channels/{id}/media/{media_id}``) resolves; without a URL, its ``attachment_id``.
#: Attachment type → message kind. ``image`` with a ``sticker_id`` is a sticker; every other
#: type (share, story_mention, reel, ig_reel, post, ig_post, fallback, template, …) is
#: ``unsupported`` with its ``payload.url`` in ``media.url`` and the whole message in ``raw``.
ATTACHMENT_KINDS: Final = {
    "image": "image",
    "video": "video",
    "audio": "audio",
    "file": "document",
    "location": "location",
}


def normalize(em: c.Emitter, doc: Any) -> None:
    entries = doc.get("entry") if type(doc) is dict else None
    if type(entries) is not list:
        raise NormalizeError(f"{em.platform}: body must be a JSON object with an 'entry' array")
    for entry in entries:
        if type(entry) is not dict:
            em.unsupported(entry)
            continue
        account = c.ident(entry.get("id"))
        entry_time = c.ts_auto(entry.get("time"))
        handled = False
        for name in ("messaging", "standby"):
            events = entry.get(name)
            if type(events) is list:
                handled = True
                for event in events:
                    em.guarded(_event, event, account, entry_time)
        changes = entry.get("changes")
        if type(changes) is list:
            handled = True
            for change in changes:
                if (
                    type(change) is dict
                    and change.get("field") == "messages"
                    and type(change.get("value")) is dict
                ):
                    em.guarded(_event, change["value"], account, entry_time)
                else:
                    key, time = c.change_key(entry, change)
                    em.unsupported(change, key=key, time=time, account_id=account)
        if not handled:
            em.unsupported(entry, time=entry_time, account_id=account)


def _event(em: c.Emitter, ev: Any, account: str | None, entry_time: str | None) -> None:
    if type(ev) is not dict:
        em.unsupported(ev, time=entry_time, account_id=account)
        return
    sender = c.ident(c.obj(ev.get("sender")).get("id"))
    recipient = c.ident(c.obj(ev.get("recipient")).get("id"))
    raw_ts = ev.get("timestamp")
    # Some events carry no timestamp of their own (Meta's delivery example): the entry's time
    # is the platform's, closer than the receipt time.
    time = c.ts_auto(raw_ts) or entry_time
    msg = ev.get("message")
    if type(msg) is dict:
        echo = msg.get("is_echo") is True
        peer = recipient if echo else sender
        account = account or (sender if echo else recipient)
        _message(em, ev, msg, echo, time, account, peer)
        return
    account = account or recipient
    person = c.contact(sender)
    if type(ev.get("postback")) is dict:
        pb = ev["postback"]
        mid = c.text(pb.get("mid"))
        payload = c.text(pb.get("payload"))
        reply = {"id": payload, "title": c.text(pb.get("title"))}
        key = f"pb:{mid}" if mid else f"pb:{sender}:{c.ident(raw_ts)}:{payload}"
        body = c.message(mid, "reply", reply=reply)
        em.message("message.received", key, time, account, sender, person, body, ev)
    elif type(ev.get("reaction")) is dict:
        r = ev["reaction"]
        target = c.text(r.get("mid"))
        action = c.text(r.get("action"))
        emoji = c.text(r.get("emoji")) or ""
        reaction = {"message_id": target, "emoji": "" if action == "unreact" else emoji}
        key = f"r:{target}:{action}:{emoji}:{c.ident(raw_ts)}:{sender}"
        body = c.message(None, "reaction", reaction=reaction)
        em.message("message.received", key, time, account, sender, person, body, ev)
    elif type(ev.get("message_edit")) is dict:
        edit = ev["message_edit"]
        mid = c.text(edit.get("mid"))
        key = f"edit:{mid}:{c.ident(edit.get('num_edit'))}:{c.ident(raw_ts)}"
        body = c.message(mid, "text", c.text(edit.get("text")))
        em.message("message.edited", key, time, account, sender, person, body, ev)
    elif type(ev.get("read")) is dict or type(ev.get("delivery")) is dict:
        _receipt(em, ev, account, sender, person, time)
    elif type(ev.get("referral")) is dict:
        ref = ev["referral"]
        referral = {
            "ref": c.text(ref.get("ref")),
            "source": c.text(ref.get("source")),
            "type": c.text(ref.get("type")),
        }
        update = {"blocked": None, "referral": referral}
        key = f"ref:{sender}:{c.ident(raw_ts)}:{referral['ref']}"
        em.conversation(key, time, account, sender, person, update, ev)
    else:  # optins, account_linking, handover, policy enforcement, game_play, …
        em.unsupported(ev, time=time, account_id=account, peer=sender, contact=person)


def _receipt(
    em: c.Emitter,
    ev: dict[str, Any],
    account: str | None,
    sender: str | None,
    person: c.Part | None,
    time: str | None,
) -> None:
    """``read``/``delivery``: the customer (sender) received or read our messages."""
    is_read = type(ev.get("read")) is dict
    part = ev["read"] if is_read else ev["delivery"]
    state = "read" if is_read else "delivered"
    raw_watermark = part.get("watermark")
    watermark = c.ts_auto(raw_watermark)
    mids = [m for m in c.objects(part.get("mids")) if type(m) is str]
    single = c.text(part.get("mid"))
    if single is not None:
        mids.append(single)
    if not mids:
        key = f"{state}:{sender}:{c.ident(raw_watermark)}"
        em.status(key, time, account, sender, person, _status(None, state, sender, watermark), ev)
        return
    for mid in mids:
        status = _status(mid, state, sender, watermark)
        em.status(f"{state}:{mid}", time, account, sender, person, status, ev)


def _status(mid: str | None, state: str, recipient: str | None, watermark: str | None) -> c.Part:
    return {
        "message_id": mid,
        "state": state,
        "recipient_id": recipient,
        "error": None,
        "watermark": watermark,
    }


def _message(
    em: c.Emitter,
    ev: dict[str, Any],
    msg: dict[str, Any],
    echo: bool,
    time: str | None,
    account: str | None,
    peer: str | None,
) -> None:
    mid = c.text(msg.get("mid"))
    person = c.contact(peer)
    key = f"m:{mid}" if mid is not None else None
    if key is None:
        em.unsupported(ev, time=time, account_id=account, peer=peer, contact=person)
        return
    if msg.get("is_deleted") is True:  # Instagram unsend
        body = c.message(mid, None, echo=echo)
        em.message("message.deleted", f"del:{mid}", time, account, peer, person, body, ev)
        return
    text = c.text(msg.get("text"))
    kind = "text" if text is not None else "unsupported"
    media = location = reply = None
    quick = msg.get("quick_reply")
    attachments = c.objects(msg.get("attachments"))
    if type(quick) is dict:
        kind = "reply"
        reply = {"id": c.text(quick.get("payload")), "title": text}
    elif attachments and type(attachments[0]) is dict:
        first = attachments[0]
        atype = first.get("type")
        payload = c.obj(first.get("payload"))
        kind = ATTACHMENT_KINDS.get(atype, "unsupported") if type(atype) is str else "unsupported"
        if kind == "image" and payload.get("sticker_id") is not None:
            kind = "sticker"
        if kind == "location":
            coords = c.obj(payload.get("coordinates"))
            lat, lng = c.num(coords.get("lat")), c.num(coords.get("long"))
            if lat is not None and lng is not None:
                location = {
                    "latitude": lat,
                    "longitude": lng,
                    "name": c.text(first.get("title")),
                    "address": None,
                }
        else:
            media = _attachment_media(first, kind)
            if text is None and kind == "unsupported":
                text = c.text(payload.get("title"))
    if msg.get("is_unsupported") is True:
        kind = "unsupported"
    reply_to_obj = c.obj(msg.get("reply_to"))
    reply_to = c.text(reply_to_obj.get("mid")) or c.ident(
        c.obj(reply_to_obj.get("story")).get("id")
    )
    items = [
        part
        for a in attachments[1:]
        if type(a) is dict
        and (part := _attachment_media(a, _attachment_kind(a.get("type")))) is not None
    ]
    body = c.message(
        mid,
        kind,
        text,
        media=media,
        location=location,
        reply=reply,
        reply_to=reply_to,
        echo=echo,
        attachments=([media] if media else []) + items,
    )
    em.message("message.received", key, time, account, peer, person, body, ev)


def _attachment_kind(atype: object) -> str:
    return ATTACHMENT_KINDS.get(atype, "unsupported") if type(atype) is str else "unsupported"


def url_media_id(url: str) -> str:
    """The media proxy's id of an attachment URL: ``u.`` + base64url (no padding). Meta gives
    inbound attachments no id, only a signed CDN URL, which is what the proxy fetches."""
    encoded = base64.urlsafe_b64encode(url.encode("utf-8", "surrogatepass"))
    return "u." + encoded.decode().rstrip("=")


def _attachment_media(attachment: dict[str, Any], kind: str) -> c.Part | None:
    if kind == "location":
        return None
    payload = c.obj(attachment.get("payload"))
    url = c.text(payload.get("url"))
    if url is None and kind == "unsupported":
        return None
    media_id = url_media_id(url) if url else c.ident(payload.get("attachment_id"))
    return c.media(media_id, url=url)
