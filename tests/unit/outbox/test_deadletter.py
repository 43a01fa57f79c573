"""The dead-letter wire format, and publishing a dead letter smaller when Kafka refuses it."""

from __future__ import annotations

import asyncio
import base64
from typing import Any, cast

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from outbox.deadletter import (
    DEADLETTER_VALUE_MAX,
    DeadLetter,
    dead_letter_value,
    publish_dead_letter,
)


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


class _Producer:
    """Acknowledges every send whose value fits ``limit`` bytes, refuses the others as Kafka
    does (``MessageSizeTooLargeError``), and keeps what it acknowledged."""

    def __init__(self, limit: int, error: Exception | None = None) -> None:
        self.limit = limit
        self.error = error
        self.tried: list[int] = []
        self.sent: list[tuple[str, bytes | None, dict[str, Any]]] = []

    async def send(
        self, topic: str, value: bytes, *, key: bytes | None, headers: Any
    ) -> asyncio.Future[None]:
        self.tried.append(len(value))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.error is not None:
            future.set_exception(self.error)
        elif len(value) > self.limit:
            future.set_exception(MessageSizeTooLargeError())
        else:
            self.sent.append((topic, key, orjson.loads(value)))
            future.set_result(None)
        return future


async def _publish(producer: _Producer, record: Any) -> None:
    await publish_dead_letter(
        cast(AIOKafkaProducer, producer),
        "p.deadletter.v1",
        record,
        DeadLetter("not_json", "the value is not JSON"),
        consumer="outbox.commands",
    )


async def test_a_dead_letter_kafka_refuses_is_published_smaller_until_it_fits() -> None:
    raw = b"\xff" + b"v" * 50_000
    big_key = b"k" * 40_000

    whole = _Producer(limit=1_000_000)
    await _publish(whole, poison(raw))
    ((topic, key, letter),) = whole.sent
    assert (topic, key) == ("p.deadletter.v1", b"ch:1")
    assert letter["data"]["original"]["value"] is not None

    no_value = _Producer(limit=100_000)
    await _publish(no_value, poison(raw, key=big_key))
    ((_, key, letter),) = no_value.sent
    assert len(no_value.tried) == 2
    assert key == big_key
    assert letter["data"]["original"]["value"] is None
    assert letter["data"]["original"]["key"] == big_key.decode()

    no_key = _Producer(limit=50_000)
    await _publish(no_key, poison(raw, key=big_key))
    ((_, key, letter),) = no_key.sent
    assert len(no_key.tried) == 3
    assert key is None
    assert letter["subject"] is None
    assert letter["data"]["original"]["value_size"] == len(raw)


async def test_a_dead_letter_that_never_fits_or_a_broker_failure_raises() -> None:
    never = _Producer(limit=10)
    with pytest.raises(MessageSizeTooLargeError):
        await _publish(never, poison(b"x"))
    assert len(never.tried) == 3
    away = _Producer(limit=1_000_000, error=KafkaConnectionError())
    with pytest.raises(KafkaConnectionError):  # not a size problem: no smaller shape tried
        await _publish(away, poison(b"x"))
    assert len(away.tried) == 1
