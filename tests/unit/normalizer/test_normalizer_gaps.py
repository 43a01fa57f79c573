"""Normalizer gaps found on real payloads (issue 12, item 7): one fixture test per gap."""

from __future__ import annotations

import base64
from typing import Any

from normalizer import normalize

from .helpers import RECEIVED_AT, load, run

TW_MEDIA = "https://api.twilio.com/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Messages"


def _data(platform: str, name: str, **kw: Any) -> list[dict[str, Any]]:
    return [e.model_dump(mode="json") for e in run(platform, load(platform, name), **kw)]


def test_whatsapp_group_message_belongs_to_the_group_conversation() -> None:
    [event] = _data("whatsapp", "group_text.json")
    group = "Y2FwaV9ncm91cDoxNTU1MDc4Mzg4MToxMjAzNjMzOTEzNDQ5NzY4NjA="
    assert event["subject"] == f"whatsapp:106540352242922:{group}"
    assert event["data"]["conversation_id"] == event["subject"]
    assert event["data"]["contact"]["id"] == "16505551234"  # the participant who wrote
    assert event["data"]["message"]["text"] == "Hello group"


def test_whatsapp_legacy_voice_type_is_voice() -> None:
    [event] = _data("whatsapp", "voice_legacy.json")
    message = event["data"]["message"]
    assert message["kind"] == "voice"
    assert message["media"]["id"] == "1234567890987654321"
    assert message["media"]["mime_type"] == "audio/ogg; codecs=opus"
    assert message["attachments"] == [message["media"]]


def test_whatsapp_status_keeps_pricing() -> None:
    [event] = _data("whatsapp", "status_sent.json")
    assert event["data"]["status"]["pricing"] == {
        "category": "marketing",
        "billable": True,
        "model": "PMP",
    }
    [read] = _data("whatsapp", "status_read.json")
    assert read["data"]["status"]["pricing"] is None


def test_twilio_mms_keeps_every_media_item() -> None:
    [event] = _data("twilio", "mms.txt")
    message = event["data"]["message"]
    base = f"{TW_MEDIA}/MM1f0e8ae6ade43cb3c0ce4525424e4050/Media"
    assert [(a["id"], a["mime_type"], a["url"]) for a in message["attachments"]] == [
        ("MM1f0e8ae6ade43cb3c0ce4525424e4050:ME0", "image/jpeg", f"{base}/ME0"),
        ("MM1f0e8ae6ade43cb3c0ce4525424e4050:ME1", "image/png", f"{base}/ME1"),
    ]
    assert message["media"] == message["attachments"][0]
    assert message["kind"] == "image"
    assert message["text"] == "Two photos"


def test_twilio_kind_follows_message_type_contacts_with_a_vcard() -> None:
    [event] = _data("twilio", "whatsapp_contacts.txt")
    message = event["data"]["message"]
    assert message["kind"] == "contacts"
    assert message["media"]["mime_type"] == "text/vcard"
    sids = "MM8824aa0000000000000000000000c001:ME0a0b0c0d0e0f00000000000000000001"
    assert message["media"]["id"] == sids


def test_twilio_vcard_without_message_type_is_contacts() -> None:
    body = load("twilio", "whatsapp_contacts.txt").replace(b"MessageType=contacts&", b"")
    [event] = run("twilio", body)
    assert event.model_dump(mode="json")["data"]["message"]["kind"] == "contacts"


def test_conversation_ids_never_have_empty_parts() -> None:
    [event] = normalize("twilio", b"MessageSid=SM1&Body=hi", channel_id="c")
    assert event.subject == "twilio:-:-"
    [tg] = normalize(
        "telegram",
        b'{"update_id": 1, "message": {"message_id": 1, "date": 1, "text": "x", "chat": {}}}',
        channel_id="c",
    )
    assert tg.subject == "telegram:-:-"
    for event in run("whatsapp", load("whatsapp", "template_status_update.json")):
        assert "" not in event.subject.split(":")


def test_twilio_status_callback_time_is_the_delivery_report_time() -> None:
    [event] = _data("twilio", "status_delivered.txt")
    assert event["time"] == "2025-11-22T12:00:00Z"  # RawDlrDoneDate=2511221200
    [queued] = _data("twilio", "status_queued.txt")
    assert queued["time"] == "2026-11-22T12:00:00Z"  # no timestamp: the receipt time


def test_twilio_json_body_is_read_as_event_streams_cloudevents() -> None:
    events = normalize(
        "twilio",
        load("twilio", "event_streams.json"),
        channel_id="ch_test",
        content_type="application/json",
        received_at=RECEIVED_AT,
    )
    dumped = [e.model_dump(mode="json") for e in events]
    assert [e["type"] for e in dumped] == ["message.received", "message.status", "unsupported"]
    inbound, delivered, other = dumped
    assert inbound["subject"] == "twilio:+12345678901:+11234567890"
    assert inbound["time"] == "2025-01-01T00:00:00Z"
    assert inbound["data"]["message"]["text"] == "Ahoy!"
    assert inbound["data"]["message"]["id"] == "SM0000000000000000000000000000001"
    assert delivered["subject"] == inbound["subject"]
    assert delivered["time"] == "2025-01-01T00:00:04.250000Z"
    assert delivered["data"]["status"]["state"] == "delivered"
    assert delivered["data"]["status"]["message_id"] == "SM0000000000000000000000000000002"
    assert other["data"]["raw"]["data"]["callSid"] == "CA0000000000000000000000000000001"
    again = normalize(
        "twilio",
        load("twilio", "event_streams.json"),
        channel_id="ch_test",
        content_type="application/json; charset=utf-8",
    )
    assert [e.id for e in again] == [e.id for e in events]


def test_twilio_event_stream_status_dedups_with_the_form_callback() -> None:
    form = b"MessageSid=SM0000000000000000000000000000002&MessageStatus=delivered&From=a&To=b"
    [from_form] = normalize("twilio", form, channel_id="ch_test")
    es = normalize(
        "twilio",
        load("twilio", "event_streams.json"),
        channel_id="ch_test",
        content_type="application/json",
    )
    assert from_form.id == es[1].id


def test_messenger_keeps_every_attachment() -> None:
    [event] = _data("messenger", "attachments_multiple.json")
    message = event["data"]["message"]
    assert len(message["attachments"]) >= 2
    assert message["media"] == message["attachments"][0]
    assert all(a["url"] for a in message["attachments"])
    for item in message["attachments"]:  # the proxy id carries the URL the proxy fetches
        encoded = item["id"].removeprefix("u.")
        assert base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode() == item["url"]
