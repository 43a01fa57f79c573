"""Pure parts of intake: the request hash, window keys, command parsing, dead-letter records."""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, cast

import asyncpg
import orjson
import pytest
from aiokafka import ConsumerRecord
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncSession

from outbox.consumer import (
    DEADLETTER_VALUE_MAX,
    DeadLetter,
    data_error,
    dead_letter_value,
    parse_command,
)
from outbox.contracts import SendCommand
from outbox.errors import ContentNotSupported, WindowClosed
from outbox.intake import check, needs_window, request_hash, window_key
from switchboard.channels.models import Channel
from switchboard.settings import Settings


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
    # the sender decides too: a Twilio WhatsApp channel needs the window whatever ``to`` says
    assert needs_window("twilio", command(to="+15551234567"), "whatsapp:+14155238886")
    assert not needs_window("twilio", command(to="+15551234567"), "+14155238886")
    assert not needs_window("twilio", command(content=template), "whatsapp:+14155238886")


class _NoWindows:
    """The one session call ``check`` makes: no window is recorded for anyone."""

    async def get(self, model: type, key: str) -> None:
        return None


def _twilio(account_id: str) -> Channel:
    return Channel(id=uuid.uuid4(), platform="twilio", account_id=account_id, enabled=True)


@pytest.mark.parametrize(
    ("account_id", "to", "fragment"),
    [
        ("whatsapp:+14155238886", "+393331234567", "WhatsApp sender"),
        ("+14155238886", "whatsapp:+393331234567", "SMS sender"),
    ],
)
async def test_check_refuses_a_twilio_whatsapp_sms_mix(
    account_id: str, to: str, fragment: str
) -> None:
    settings = Settings(_env_file=None)
    with pytest.raises(ContentNotSupported, match=fragment) as refused:
        await check(
            cast(AsyncSession, _NoWindows()),
            settings,
            command(to=to),
            _twilio(account_id),
            datetime.now(UTC),
        )
    assert refused.value.code == "unsupported_content"


async def test_check_applies_the_window_to_a_twilio_whatsapp_sender() -> None:
    settings = Settings(_env_file=None)
    with pytest.raises(WindowClosed):
        await check(
            cast(AsyncSession, _NoWindows()),
            settings,
            command(to="whatsapp:+393331234567"),
            _twilio("whatsapp:+14155238886"),
            datetime.now(UTC),
        )
    # an SMS pair has no window
    await check(
        cast(AsyncSession, _NoWindows()),
        settings,
        command(to="+393331234567"),
        _twilio("+14155238886"),
        datetime.now(UTC),
    )


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


def poison(value: bytes, key: bytes = b"ch:1") -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="p.outbound.commands.v1",
        partition=2,
        offset=7,
        timestamp=1_700_000_000_000,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value),
        headers=(),
    )


def test_dead_letter_record_embeds_the_original() -> None:
    record = poison(b"\xff binary")
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
    assert original["value_truncated"] is False
    assert original["value_size"] == 8
    assert value["data"]["reason"] == "not_json"


def test_dead_letter_record_caps_the_original_value_and_the_detail() -> None:
    """A ~900 KB value base64-encoded made a dead letter over the producer's 1 MiB limit."""
    raw = b"\xff" + bytes(range(256)) * 3600  # ~900 KB, not UTF-8
    letter = DeadLetter("not_json", "d" * 10_000)
    dumped = dead_letter_value(poison(raw), letter, consumer="c.d")
    assert len(dumped) < 400_000
    value = orjson.loads(dumped)
    original = value["data"]["original"]
    assert original["value_encoding"] == "base64"
    assert base64.b64decode(original["value"]) == raw[:DEADLETTER_VALUE_MAX]
    assert original["value_truncated"] is True
    assert original["value_size"] == len(raw)
    assert len(value["data"]["detail"]) == 4096
    assert value["data"]["detail"].endswith("…")

    # valid UTF-8 stays text; a cut inside a character drops that character only
    text = "é" * 400_000  # 2 bytes each: the cap falls on a boundary, shift it by one
    original = orjson.loads(
        dead_letter_value(poison(b"x" + text.encode()), letter, consumer="c.d")
    )["data"]["original"]
    assert original["value_encoding"] == "utf-8"
    assert original["value"] == "x" + "é" * ((DEADLETTER_VALUE_MAX - 1) // 2)
    assert original["value_truncated"] is True

    bare = orjson.loads(
        dead_letter_value(poison(raw, key=b"k" * 10), letter, consumer="c.d", include_value=False)
    )
    assert bare["subject"] == "k" * 10
    assert bare["data"]["original"]["value"] is None
    assert bare["data"]["original"]["value_encoding"] is None
    assert bare["data"]["original"]["value_truncated"] is True
    assert bare["data"]["original"]["value_size"] == len(raw)
    keyless = orjson.loads(
        dead_letter_value(
            poison(raw), letter, consumer="c.d", include_value=False, include_key=False
        )
    )
    assert keyless["subject"] is None
    assert keyless["data"]["original"]["key"] is None
    assert keyless["id"] == bare["id"]  # still the id of topic:partition:offset


class _AdaptedError(Exception):
    """What SQLAlchemy's asyncpg adapter puts in ``DBAPIError.orig``: it carries the SQLSTATE."""

    def __init__(self, sqlstate: str | None) -> None:
        super().__init__("db error")
        self.sqlstate = sqlstate


def test_data_errors_are_told_from_failures_worth_retrying() -> None:
    too_long = DBAPIError("INSERT …", None, _AdaptedError("22001"))
    assert data_error(too_long) == "22001"
    assert data_error(DBAPIError("INSERT …", None, _AdaptedError("22P05"))) == "22P05"
    # the asyncpg exception itself, as the cause of a wrapper
    wrapped = DBAPIError("INSERT …", None, _AdaptedError(None))
    wrapped.__cause__ = asyncpg.exceptions.StringDataRightTruncationError("value too long")
    assert data_error(wrapped) == "22001"
    # not the record's fault: retried
    assert data_error(OperationalError("SELECT 1", None, _AdaptedError("57P01"))) is None
    assert data_error(DBAPIError("INSERT …", None, _AdaptedError("40001"))) is None
    assert data_error(DBAPIError("INSERT …", None, _AdaptedError(None))) is None
    assert data_error(ConnectionResetError()) is None
