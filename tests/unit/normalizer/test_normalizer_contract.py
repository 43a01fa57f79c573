"""The contract around the adapters: errors, ids, determinism, time, schema drift."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from normalizer import (
    EVENT_ADAPTER,
    PLATFORMS,
    InboundEvent,
    MessageEvent,
    NormalizeError,
    dump_event,
    json_schema,
    normalize,
)
from normalizer._common import NAMESPACE
from normalizer.schema import render

from .helpers import FIXTURES, load, run
from .jsonschema_lite import validate

SCHEMA_FILE = Path(__file__).resolve().parents[3] / "openapi/schemas/inbound-event.schema.json"
ALL_FIXTURES = sorted(p for p in FIXTURES.glob("*/*") if p.suffix in {".json", ".txt"})


def test_platforms_are_the_five_of_the_design() -> None:
    assert PLATFORMS == ("whatsapp", "messenger", "instagram", "telegram", "twilio")


def test_committed_schema_matches_the_models() -> None:
    assert SCHEMA_FILE.read_text() == render(), (
        "regenerate: python -m normalizer.schema > openapi/schemas/inbound-event.schema.json"
    )
    assert json.loads(render()) == json_schema()


@pytest.mark.parametrize("fixture", ALL_FIXTURES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_same_input_twice_gives_identical_bytes_and_valid_events(fixture: Path) -> None:
    platform, body = fixture.parent.name, fixture.read_bytes()
    first = [dump_event(e) for e in run(platform, body)]
    second = [dump_event(e) for e in run(platform, body)]
    assert first == second
    schema = json_schema()
    for raw in first:
        validate(json.loads(raw), schema)
        again = EVENT_ADAPTER.validate_json(raw)
        assert dump_event(again) == raw


def test_ids_are_uuid5_over_platform_channel_and_dedup_key() -> None:
    (event,) = run("whatsapp", load("whatsapp", "text.json"), channel_id="ch_9")
    wamid = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
    assert event.id == str(uuid.uuid5(uuid.UUID(NAMESPACE), f"whatsapp\nch_9\nm:{wamid}"))
    (other_channel,) = run("whatsapp", load("whatsapp", "text.json"), channel_id="ch_10")
    assert other_channel.id != event.id


def test_ids_do_not_depend_on_receipt_time() -> None:
    body = load("twilio", "sms.txt")
    a = run("twilio", body, received_at=datetime(2026, 1, 1, tzinfo=UTC))
    b = run("twilio", body, received_at=datetime(2026, 1, 2, tzinfo=UTC))
    assert a[0].id == b[0].id
    assert a[0].time != b[0].time


def test_status_ids_differ_per_state_and_redeliveries_collide() -> None:
    sent = run("whatsapp", load("whatsapp", "status_sent.json"))[0]
    read = run("whatsapp", load("whatsapp", "status_read.json"))[0]
    played = run("whatsapp", load("whatsapp", "status_played.json"))[0]
    assert len({sent.id, read.id, played.id}) == 3
    batch = run("whatsapp", load("whatsapp", "batch.json"))
    assert len({e.id for e in batch}) == len(batch)


def test_status_and_message_share_the_conversation_key() -> None:
    """The Kafka key of a receipt equals the one of the messages with the same person."""
    pairs = [
        (("whatsapp", "text.json"), ("whatsapp", "status_read.json")),
        (("messenger", "text.json"), ("messenger", "read.json")),
        (("messenger", "text.json"), ("messenger", "echo.json")),
        (("instagram", "text.json"), ("instagram", "seen.json")),
        (("twilio", "whatsapp_text.txt"), ("twilio", "whatsapp_status_read.txt")),
        (("twilio", "whatsapp_text.txt"), ("twilio", "whatsapp_status_failed.txt")),
    ]
    for (p1, f1), (p2, f2) in pairs:
        assert run(p1, load(p1, f1))[0].subject == run(p2, load(p2, f2))[0].subject, (f1, f2)


def test_time_falls_back_to_received_at_then_null() -> None:
    body = load("twilio", "sms.txt")
    assert run("twilio", body)[0].time == "2026-11-22T12:00:00Z"
    assert normalize("twilio", body, channel_id="c")[0].time is None
    cet = timezone(timedelta(hours=1))
    naive = normalize(
        "twilio", body, channel_id="c", received_at=datetime(2026, 1, 1, 13, 0, 0, 250000, cet)
    )
    assert naive[0].time == "2026-01-01T12:00:00.250000Z"


def test_account_id_argument_is_the_fallback_only() -> None:
    tg = load("telegram", "text_private.json")
    assert normalize("telegram", tg, channel_id="c")[0].subject == "telegram:-:1760450482"
    assert normalize("telegram", tg, channel_id="c", account_id="42")[0].data.account_id == "42"
    wa = load("whatsapp", "text.json")
    wa_events = normalize("whatsapp", wa, channel_id="c", account_id="configured")
    assert wa_events[0].data.account_id == "106540352242922"


def test_events_are_frozen_typed_models() -> None:
    (event,) = run("whatsapp", load("whatsapp", "text.json"))
    assert isinstance(event, MessageEvent)
    assert isinstance(event, InboundEvent)
    with pytest.raises(ValueError, match="frozen"):
        event.subject = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("platform", "body", "content_type", "message"),
    [
        ("signal", b"{}", None, "unknown platform"),
        ("whatsapp", b"", None, "not valid JSON"),
        ("whatsapp", b"{nope", None, "not valid JSON"),
        ("whatsapp", b"[1, 2]", None, "'entry' array"),
        ("whatsapp", b'{"object": "whatsapp_business_account"}', None, "'entry' array"),
        ("whatsapp", b'{"entry": {}}', None, "'entry' array"),
        ("whatsapp", b'{"entry": [], "x": 1e999}', None, None),
        ("messenger", b'"page"', None, "'entry' array"),
        ("instagram", b"null", None, "'entry' array"),
        ("telegram", b'{"message": {}}', None, "update_id"),
        ("telegram", b'{"update_id": "1"}', None, "update_id"),
        ("telegram", b'{"update_id": true}', None, "update_id"),
        ("telegram", b"\xff\xfe", None, "not valid JSON"),
        ("telegram", b'{"update_id": 1, "x": NaN}', None, "not valid JSON"),
        ("twilio", b"Body=hi&From=%2B1555", None, "MessageSid"),
        ("twilio", b"MessageSid=SM1", "text/plain", "form-urlencoded"),
        ("twilio", b"MessageSid=SM1", "application/json", "not valid JSON"),
        ("twilio", b'"SM1"', "application/json", "CloudEvent"),
        ("twilio", b"MessageSid=SM1&Body=\xff", None, "UTF-8"),
        ("twilio", b"&".join(b"a=1" for _ in range(10_001)), None, "too many"),
    ],
)
def test_malformed_input_raises_one_typed_error(
    platform: str, body: bytes, content_type: str | None, message: str | None
) -> None:
    if message is None:  # a huge exponent parses as infinity: still well-formed, no events
        assert normalize(platform, body, channel_id="c") == []
        return
    with pytest.raises(NormalizeError, match=message) as info:
        normalize(platform, body, channel_id="c", content_type=content_type)
    text = str(info.value)
    assert "\n" not in text
    assert len(text) < 200


def test_error_message_never_quotes_the_body() -> None:
    secret = b'{"entry": "sk_live_SECRET_TOKEN"'
    with pytest.raises(NormalizeError) as info:
        normalize("whatsapp", secret, channel_id="c")
    assert "SECRET" not in str(info.value)


def test_twilio_accepts_form_content_type_with_charset() -> None:
    events = normalize(
        "twilio",
        load("twilio", "sms.txt"),
        channel_id="c",
        content_type="application/x-www-form-urlencoded; charset=UTF-8",
    )
    assert events[0].type == "message.received"


def test_well_formed_but_unknown_is_kept_as_unsupported() -> None:
    (event,) = normalize("telegram", b'{"update_id": 9, "future_thing": {"a": 1}}', channel_id="c")
    assert event.type == "unsupported"
    assert event.data.raw == {"update_id": 9, "future_thing": {"a": 1}}
    events = normalize("whatsapp", b'{"entry": [1, {"changes": "x"}]}', channel_id="c")
    assert [e.type for e in events] == ["unsupported", "unsupported"]
    assert normalize("messenger", b'{"object": "page", "entry": []}', channel_id="c") == []


def test_infinite_numbers_in_raw_are_dumped_as_valid_json() -> None:
    body = b'{"update_id": 5, "message": {"message_id": 1, "chat": {"id": 1}, "x": 1e999}}'
    (event,) = normalize("telegram", body, channel_id="c")
    raw = dump_event(event)
    json.loads(raw, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))


def test_internal_bug_degrades_to_unsupported_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from normalizer import _common, whatsapp

    def boom(*_: object) -> None:
        raise RuntimeError("bug")

    monkeypatch.setattr(_common, "RAISE_INTERNAL_ERRORS", False)
    monkeypatch.setattr(whatsapp, "_body", boom)
    events = run("whatsapp", load("whatsapp", "batch.json"))
    assert [e.type for e in events] == [
        "unsupported",
        "unsupported",
        "message.status",
        "message.status",
        "unsupported",
    ]
    assert events[0].data.raw["id"] == "wamid.B1="
