"""Focused regressions: dedup keys and times of events the fixtures alone did not pin down.

The gateway deduplicates on the event id, so two distinct platform events must never share
one, while a redelivery of the same body must get the same ids again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest
from pydantic_core import to_json

from normalizer._common import NAMESPACE

from .helpers import RECEIVED, run

# ------------------------------------------------------------- Meta non-messaging changes


def _wa_change(field: str, value: dict[str, Any], time: Any) -> bytes:
    entry: dict[str, Any] = {"id": "102290129340398", "changes": [{"field": field, "value": value}]}
    if time is not None:
        entry["time"] = time
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


def _template(event: str) -> dict[str, Any]:
    return {
        "event": event,
        "message_template_id": 1234567890,
        "message_template_name": "order_confirmation",
        "message_template_language": "en_US",
        "reason": "NONE",
    }


def test_whatsapp_template_re_approval_is_a_new_event_at_entry_time() -> None:
    """APPROVED → DISABLED → APPROVED: the third change repeats the first one's value; only
    entry.time tells them apart. Before, it got the first one's id and was deduplicated away."""
    history = [("APPROVED", 1750030000), ("DISABLED", 1750040000), ("APPROVED", 1750090000)]
    events = [
        run("whatsapp", _wa_change("message_template_status_update", _template(ev), t))[0]
        for ev, t in history
    ]
    assert [e.type for e in events] == ["unsupported"] * 3
    assert len({e.id for e in events}) == 3
    assert [e.time for e in events] == [
        "2025-06-15T23:26:40Z",
        "2025-06-16T02:13:20Z",
        "2025-06-16T16:06:40Z",
    ]
    again = _wa_change("message_template_status_update", _template("APPROVED"), 1750090000)
    assert run("whatsapp", again)[0].id == events[2].id


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        (1750030000, "2025-06-15T23:26:40Z"),  # seconds, as WhatsApp sends
        (1750030000123, "2025-06-15T23:26:40.123Z"),  # milliseconds
        ("1750030000", "2025-06-15T23:26:40Z"),
        (None, RECEIVED),  # no entry.time: the receipt time, as for any event without one
    ],
    ids=["seconds", "milliseconds", "string", "absent"],
)
def test_whatsapp_other_fields_take_entry_time(time: Any, expected: str) -> None:
    value = {"display_phone_number": "15550783881", "event": "FLAGGED", "current_limit": "TIER_1K"}
    (event,) = run("whatsapp", _wa_change("phone_number_quality_update", value, time))
    assert event.type == "unsupported"
    assert event.time == expected
    assert event.data.raw == {"field": "phone_number_quality_update", "value": value}


def test_whatsapp_change_key_covers_entry_id_time_and_change() -> None:
    body = _wa_change("message_template_status_update", _template("APPROVED"), 1750030000)
    (event,) = run("whatsapp", body, channel_id="ch_9")
    change = json.loads(body)["entry"][0]["changes"][0]
    digest = hashlib.sha256(to_json(change)).hexdigest()
    key = f"chg:102290129340398:1750030000:{digest}"
    assert event.id == str(uuid.uuid5(uuid.UUID(NAMESPACE), f"whatsapp\nch_9\n{key}"))
    # another entry (another WABA) with the same change at the same time: another event
    other = body.replace(b"102290129340398", b"102290129340399")
    assert run("whatsapp", other, channel_id="ch_9")[0].id != event.id


def _ig_comment(text: str, time: int | None) -> bytes:
    entry: dict[str, Any] = {
        "id": "17841400000000000",
        "changes": [
            {
                "field": "comments",
                "value": {"id": "17865799348089039", "from": {"id": "1"}, "text": text},
            }
        ],
    }
    if time is not None:
        entry["time"] = time
    return json.dumps({"object": "instagram", "entry": [entry]}).encode()


def test_instagram_comment_changes_are_keyed_and_timed_by_entry() -> None:
    first = run("instagram", _ig_comment("Nice!", 1761287298065))[0]
    later = run("instagram", _ig_comment("Nice!", 1761287398065))[0]
    assert first.type == later.type == "unsupported"
    assert first.time == "2025-10-24T06:28:18.065Z"
    assert later.time == "2025-10-24T06:29:58.065Z"
    assert first.id != later.id
    assert run("instagram", _ig_comment("Nice!", 1761287298065))[0].id == first.id
    assert run("instagram", _ig_comment("Nice!", None))[0].time == RECEIVED


def test_meta_entry_without_known_items_takes_entry_time() -> None:
    body = {"object": "page", "entry": [{"id": "112233445566778", "time": 1458692752478}]}
    (event,) = run("messenger", json.dumps(body).encode())
    assert event.type == "unsupported"
    assert event.time == "2016-03-23T00:25:52.478Z"


# ------------------------------------------------------------- WhatsApp group receipts


def _wa_statuses(*statuses: dict[str, Any]) -> bytes:
    value = {"metadata": {"phone_number_id": "106540352242922"}, "statuses": list(statuses)}
    entry = {"id": "W", "changes": [{"field": "messages", "value": value}]}
    return json.dumps({"object": "whatsapp_business_account", "entry": [entry]}).encode()


def _group_read(**participant: str) -> dict[str, Any]:
    return {
        "id": "wamid.GROUP=",
        "status": "read",
        "timestamp": "1750030073",
        "recipient_id": "120363000000000000",
        "recipient_type": "group",
        **participant,
    }


@pytest.mark.parametrize(
    "field", ["recipient_participant_id", "recipient_participant_user_id"], ids=str
)
def test_whatsapp_group_receipts_of_each_participant_are_distinct(field: str) -> None:
    body = _wa_statuses(
        _group_read(**{field: "16505551234"}),
        _group_read(**{field: "16505559999"}),
    )
    events = run("whatsapp", body, channel_id="ch_9")
    assert [e.type for e in events] == ["message.status"] * 2
    assert len({e.id for e in events}) == 2
    for event in events:
        assert event.data.status is not None
        assert event.data.status.message_id == "wamid.GROUP="
        assert event.data.status.state == "read"
        assert event.time == "2025-06-15T23:27:53Z"
    key = "s:wamid.GROUP=:read:16505551234"
    assert events[0].id == str(uuid.uuid5(uuid.UUID(NAMESPACE), f"whatsapp\nch_9\n{key}"))
    assert [e.id for e in run("whatsapp", body, channel_id="ch_9")] == [e.id for e in events]


def test_whatsapp_one_to_one_receipt_key_is_unchanged() -> None:
    status = {"id": "wamid.X=", "status": "read", "timestamp": "1", "recipient_id": "1650"}
    (event,) = run("whatsapp", _wa_statuses(status), channel_id="ch_9")
    expected = uuid.uuid5(uuid.UUID(NAMESPACE), "whatsapp\nch_9\ns:wamid.X=:read")
    assert event.id == str(expected)


# ------------------------------------------------------------- Telegram sender_chat

SUPERGROUP = {"id": -1001234567890, "type": "supergroup", "title": "Support"}
CHANNEL = {"id": -1009876543210, "type": "channel", "title": "News", "username": "news"}
ANONYMOUS_BOT = {
    "id": 1087968824,
    "is_bot": True,
    "first_name": "Group",
    "username": "GroupAnonymousBot",
}
SERVICE_USER = {"id": 777000, "is_bot": False, "first_name": "Telegram"}
USER = {"id": 1760450482, "is_bot": False, "first_name": "Martin", "username": "martinman"}


@pytest.mark.parametrize(
    ("field", "sender", "sender_chat", "contact"),
    [
        (  # anonymous group admin: the group speaks
            "message",
            ANONYMOUS_BOT,
            SUPERGROUP,
            {"id": "-1001234567890", "name": "Support", "phone": None, "username": None},
        ),
        (  # a linked channel's post automatically forwarded to its discussion group
            "message",
            SERVICE_USER,
            CHANNEL,
            {"id": "-1009876543210", "name": "News", "phone": None, "username": "news"},
        ),
        (
            "edited_message",
            ANONYMOUS_BOT,
            SUPERGROUP,
            {"id": "-1001234567890", "name": "Support", "phone": None, "username": None},
        ),
        (  # an ordinary member: no sender_chat, the user is the sender
            "message",
            USER,
            None,
            {"id": "1760450482", "name": "Martin", "phone": None, "username": "martinman"},
        ),
    ],
    ids=["anonymous-admin", "channel-auto-forward", "edited-anonymous", "member"],
)
def test_telegram_contact_is_sender_chat_when_sent_on_behalf_of_a_chat(
    field: str, sender: dict[str, Any], sender_chat: dict[str, Any] | None, contact: dict[str, Any]
) -> None:
    message: dict[str, Any] = {
        "message_id": 77,
        "from": sender,
        "chat": SUPERGROUP,
        "date": 1700000000,
        "text": "hi",
    }
    if field == "edited_message":
        message["edit_date"] = 1700000060
    if sender_chat is not None:
        message["sender_chat"] = sender_chat
    (event,) = run("telegram", json.dumps({"update_id": 10, field: message}).encode())
    assert event.data.contact is not None
    assert event.data.contact.model_dump() == contact
    assert event.subject == "telegram:7000000001:-1001234567890"  # the chat, unchanged


# ------------------------------------------------------------- Messenger/Instagram time

DELIVERY = {  # Meta's message-deliveries example: no event timestamp
    "sender": {"id": "6101234567890123"},
    "recipient": {"id": "112233445566778"},
    "delivery": {"mids": ["mid.1458668856218:ed81099e15d3f4f233"], "watermark": 1458668856253},
}
IG_READ = {
    "sender": {"id": "1234567890123456"},
    "recipient": {"id": "17841400000000000"},
    "read": {"mid": "aWdfOUR_MESSAGE"},
}
IG_TEXT = {
    "sender": {"id": "1234567890123456"},
    "recipient": {"id": "17841400000000000"},
    "message": {"mid": "aWdfTHEIRS", "text": "hi"},
}


def _meta(platform: str, event: dict[str, Any], time: Any, form: str = "messaging") -> bytes:
    entry: dict[str, Any] = {"id": event["recipient"]["id"]}
    if time is not None:
        entry["time"] = time
    if form == "changes":
        entry["changes"] = [{"field": "messages", "value": event}]
    else:
        entry[form] = [event]
    obj = "page" if platform == "messenger" else "instagram"
    return json.dumps({"object": obj, "entry": [entry]}).encode()


@pytest.mark.parametrize(
    ("platform", "event", "form", "entry_time", "expected"),
    [
        ("messenger", DELIVERY, "messaging", 1458692752478, "2016-03-23T00:25:52.478Z"),
        ("messenger", DELIVERY, "standby", 1458692752478, "2016-03-23T00:25:52.478Z"),
        ("messenger", DELIVERY, "messaging", None, RECEIVED),
        ("instagram", IG_READ, "messaging", 1761287298065, "2025-10-24T06:28:18.065Z"),
        ("instagram", IG_TEXT, "changes", 1761287298, "2025-10-24T06:28:18Z"),
        (  # the event's own timestamp still wins over the entry's
            "messenger",
            {**DELIVERY, "timestamp": 1458692750000},
            "messaging",
            1458692752478,
            "2016-03-23T00:25:50.000Z",
        ),
    ],
    ids=["delivery", "standby", "no-entry-time", "ig-read", "ig-changes", "own-timestamp"],
)
def test_meta_events_without_timestamp_take_entry_time(
    platform: str, event: dict[str, Any], form: str, entry_time: Any, expected: str
) -> None:
    (result,) = run(platform, _meta(platform, event, entry_time, form))
    assert result.type != "unsupported"
    assert result.time == expected


def test_meta_delivery_id_does_not_depend_on_entry_time() -> None:
    """The receipt is keyed by message id and state: the time fix leaves ids alone."""
    first = run("messenger", _meta("messenger", DELIVERY, 1458692752478))[0]
    other = run("messenger", _meta("messenger", DELIVERY, 1458692799999))[0]
    assert first.id == other.id
    assert first.data.status is not None
    assert first.data.status.watermark == "2016-03-22T17:47:36.253Z"
