"""The dead-letter wire format: a record a consumer cannot handle, published with its reason.

Dead-letter record (``<prefix>deadletter.v1``, key: the original key): a CloudEvent of type
``switchboard.deadletter`` whose ``id`` is derived from topic/partition/offset (a redelivered
poison record gets the same id), ``subject`` the original key, and ``data``::

    {"reason": "<the consumer's reason code>",
     "detail": "<human-readable, never the value itself>",
     "consumer": "<e.g. outbox.commands>",
     "original": {"topic", "partition", "offset", "timestamp" (RFC 3339), "key",
                  "value_encoding": "utf-8" | "base64" | null, "value": "<the original bytes>",
                  "value_truncated": bool, "value_size": <bytes> | null}}

The value is embedded up to ``DEADLETTER_VALUE_MAX`` bytes (256 KiB; ``value_truncated``). If
Kafka still refuses the dead letter as too large, it is published without the value, then also
without the key texts (``outbox.dead_letter_too_large``): a poison record never blocks its
partition. The reasons of the command consumer are in ``outbox.commands``.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer

from infra import cloudevents
from infra.consume import Record
from infra.kafka import CE_HEADERS
from infra.logging import get_logger
from outbox.events import UNPUBLISHABLE_ERRORS

__all__ = [
    "DEADLETTER_TYPE",
    "DEADLETTER_VALUE_MAX",
    "DeadLetter",
    "dead_letter_value",
    "publish_dead_letter",
]

log = get_logger(__name__)

DEADLETTER_TYPE = "switchboard.deadletter"
_DEADLETTER_NAMESPACE = uuid.UUID("0d6f4a52-9c1e-4a8e-b1f7-3e5c2d7a9b41")
DEADLETTER_VALUE_MAX = 256 * 1024
"""Bytes of the original value embedded in a dead-letter record (base64 adds a third): a
~1 MB poison record must not make a dead letter too large to publish."""
_DETAIL_MAX = 4096


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Why a record is dead-lettered: a stable ``reason`` code and a ``detail`` for people
    (never quoting the value)."""

    reason: str
    detail: str


def dead_letter_value(
    record: Record,
    letter: DeadLetter,
    *,
    consumer: str,
    include_value: bool = True,
    include_key: bool = True,
) -> bytes:
    """The dead-letter CloudEvent of ``record``. The original value is embedded up to
    ``DEADLETTER_VALUE_MAX`` bytes (``value_truncated``, ``value_size`` tell), as text if the
    whole value is UTF-8, else base64; ``include_value``/``include_key`` False leave the value
    / the key texts out (for a record still too large to publish)."""
    raw: bytes | None = record.value
    encoding: str | None = None
    text: str | None = None
    truncated = False
    if raw is not None:
        kept = raw[:DEADLETTER_VALUE_MAX] if include_value else b""
        truncated = len(kept) < len(raw)
        try:
            raw.decode("utf-8")  # the whole value decides the encoding, not the kept prefix
        except UnicodeDecodeError:
            encoding = "base64"
            text = base64.b64encode(kept).decode("ascii") if include_value else None
        else:  # a cut may split the last character: only that one is dropped
            encoding = "utf-8"
            text = kept.decode("utf-8", errors="ignore") if include_value else None
        if not include_value:
            encoding = None
    key: bytes | None = record.key
    key_text = key.decode("utf-8", errors="replace") if key is not None and include_key else None
    where = f"{record.topic}:{record.partition}:{record.offset}"
    detail = letter.detail
    if len(detail) > _DETAIL_MAX:
        detail = detail[: _DETAIL_MAX - 1] + "…"
    return cloudevents.encode(
        event_id=str(uuid.uuid5(_DEADLETTER_NAMESPACE, where)),
        source=f"/switchboard/{consumer.replace('.', '/')}",
        event_type=DEADLETTER_TYPE,
        time=datetime.now(UTC),
        subject=key_text,
        data={
            "reason": letter.reason,
            "detail": detail,
            "consumer": consumer,
            "original": {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "timestamp": cloudevents.rfc3339(
                    datetime.fromtimestamp(record.timestamp / 1000, UTC)
                ),
                "key": key_text,
                "value_encoding": encoding,
                "value": text,
                "value_truncated": truncated,
                "value_size": len(raw) if raw is not None else None,
            },
        },
    )


_DEADLETTER_SHAPES = (
    {"include_value": True, "include_key": True},
    {"include_value": False, "include_key": True},
    {"include_value": False, "include_key": False},
)
"""Tried in turn while Kafka refuses the record as too large: the (capped) value, then
without the value, then without the key texts (and without a record key)."""


async def publish_dead_letter(
    producer: AIOKafkaProducer, topic: str, record: Record, letter: DeadLetter, *, consumer: str
) -> None:
    """Publish the dead letter of ``record`` to ``topic`` and wait for the broker's ack (the
    caller commits the record's offset only after it; with a transactional ``producer`` the
    record becomes visible to read_committed readers only with that commit, in the same
    transaction). A record Kafka refuses as too large is
    published again smaller (``_DEADLETTER_SHAPES``); if even the smallest is refused, the
    error is raised."""
    for attempt, shape in enumerate(_DEADLETTER_SHAPES):
        value = dead_letter_value(record, letter, consumer=consumer, **shape)
        try:
            future = await producer.send(
                topic,
                value,
                key=record.key if shape["include_key"] else None,
                headers=CE_HEADERS,
            )
            await future
        except UNPUBLISHABLE_ERRORS:
            if attempt == len(_DEADLETTER_SHAPES) - 1:
                raise
            log.warning(
                "outbox.dead_letter_too_large",
                size=len(value),
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
            )
            continue
        break
