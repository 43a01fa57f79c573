"""Pure parts of intake: the request hash, window keys, command parsing, dead-letter records."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from aiokafka import ConsumerRecord

from outbox.consumer import DeadLetter, dead_letter_value, parse_command
from outbox.contracts import SendCommand
from outbox.intake import needs_window, request_hash, window_key


def command(**overrides: Any) -> SendCommand:
    body: dict[str, Any] = {
        "id": "c1",
        "channel_id": "ch",
        "to": "393331234567",
        "content": {"kind": "text", "text": "hi"},
        "metadata": {"b": 1, "a": {"y": 2, "x": 1}},
    }
    body.update(overrides)
    return SendCommand.model_validate(body)


def test_request_hash_ignores_id_key_order_and_offset_spelling() -> None:
    base = request_hash(command())
    assert len(base) == 64
    assert request_hash(command(id="other")) == base
    assert request_hash(command(metadata={"a": {"x": 1, "y": 2}, "b": 1})) == base
    instant = datetime(2030, 1, 1, 12, tzinfo=UTC)
    rome = instant.astimezone(timezone(timedelta(hours=1)))
    assert request_hash(command(not_after=instant)) == request_hash(command(not_after=rome))
    assert request_hash(command(content={"kind": "text", "text": "bye"})) != base
    assert request_hash(command(not_after=instant)) != base


def test_window_key_and_which_messages_need_the_window() -> None:
    assert window_key("c", "whatsapp", "+39 333-1234567") == "c:393331234567"
    assert window_key("c", "twilio", "whatsapp:+1555") == "c:whatsapp:+1555"
    template = {"kind": "template", "template": {"name": "t", "language": "en"}}
    assert needs_window("whatsapp", command())
    assert not needs_window("whatsapp", command(content=template))
    assert needs_window("twilio", command(to="whatsapp:+15551234567"))
    assert not needs_window("twilio", command(to="+15551234567"))
    assert not needs_window("telegram", command())


def _json(value: object) -> bytes:
    return orjson.dumps(value)


@pytest.mark.parametrize(
    ("value", "reason", "fragment"),
    [
        (None, "invalid_command", "no value"),
        (b"\xff\xfe", "not_json", "not JSON"),
        (b"[1, 2]", "invalid_command", "not a JSON object"),
        (_json({"specversion": "1.0", "type": "x", "data": {}}), "invalid_command", "'x'"),
        (_json({"specversion": "1.0", "type": "message.send"}), "invalid_command", "data"),
        (_json({"id": "c", "channel_id": "ch", "to": "1"}), "invalid_command", "content"),
    ],
)
def test_poison_commands(value: bytes | None, reason: str, fragment: str) -> None:
    parsed = parse_command(value)
    assert isinstance(parsed, DeadLetter)
    assert parsed.reason == reason
    assert fragment in parsed.detail


def test_cloudevent_and_bare_commands_parse_alike() -> None:
    data = command().model_dump(mode="json")
    bare = parse_command(_json(data))
    wrapped = parse_command(_json({"specversion": "1.0", "type": "message.send", "data": data}))
    assert bare == wrapped == command()


def test_dead_letter_record_embeds_the_original() -> None:
    record = ConsumerRecord(
        topic="p.outbound.commands.v1",
        partition=2,
        offset=7,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=b"ch:1",
        value=b"\xff binary",
        checksum=None,
        serialized_key_size=4,
        serialized_value_size=8,
        headers=(),
    )
    value = orjson.loads(dead_letter_value(record, DeadLetter("not_json", "x"), consumer="c.d"))
    again = orjson.loads(dead_letter_value(record, DeadLetter("not_json", "x"), consumer="c.d"))
    assert value["id"] == again["id"]  # a redelivered poison record keeps its id
    assert value["type"] == "switchboard.deadletter"
    assert value["subject"] == "ch:1"
    original = value["data"]["original"]
    assert original["offset"] == 7
    assert original["timestamp"] == "2023-11-14T22:13:20Z"
    assert original["value_encoding"] == "base64"
    assert base64.b64decode(original["value"]) == b"\xff binary"
    assert value["data"]["reason"] == "not_json"
