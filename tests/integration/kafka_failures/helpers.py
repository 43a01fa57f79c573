"""Shared by the Kafka failure tests: polling, topic leaders, a whole-topic reader, send commands
for a Twilio channel on the fake platform, and the figures each test prints."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.kafka import CE_HEADERS
from infra.settings import Settings
from outbox.models import OutboxEvent, OutboxMessage
from tests.support import reader_from_start, until

__all__ = ["TERMINAL", "until"]

TERMINAL = frozenset({"delivered", "read", "failed", "dead", "cancelled"})


async def leaders(settings: Settings, topic: str) -> Counter[int]:
    """Node id → how many partitions of ``topic`` it leads."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
        return Counter(int(p["leader"]) for p in described["partitions"])
    finally:
        await admin.close()


async def read_topic(
    settings: Settings,
    topic: str,
    done: Callable[[list[dict[str, Any]]], bool],
    limit_s: float = 60,
) -> list[dict[str, Any]]:
    """Read every partition of ``topic`` from the beginning until ``done(records)``; records
    are dicts with ``key``, ``partition``, ``offset`` and the decoded ``event``."""
    consumer = await reader_from_start(settings, topic, limit_s)
    records: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(limit_s):
            while not done(records):
                batch = await consumer.getmany(timeout_ms=300)
                for tp in sorted(batch, key=lambda t: t.partition):
                    records += [
                        {
                            "key": r.key.decode() if r.key else None,
                            "partition": r.partition,
                            "offset": r.offset,
                            "event": orjson.loads(r.value),
                        }
                        for r in batch[tp]
                    ]
    finally:
        await consumer.stop()
    return records


def send_command(command_id: str, channel_id: str, to: str) -> bytes:
    """A ``message.send`` CloudEvent for ``outbound.commands.v1``; its text names the command."""
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": "/crm",
            "type": "message.send",
            "datacontenttype": "application/json",
            "data": {
                "id": command_id,
                "channel_id": channel_id,
                "to": to,
                "content": {"kind": "text", "text": f"text of {command_id}"},
                "metadata": {"command": command_id},
            },
        }
    )


async def produce_commands(
    producer: Any, settings: Settings, channel_id: str, names: list[str], recipients: list[str]
) -> None:
    """One command per name, its recipient taken in turn from ``recipients``, keyed by
    conversation (``channel:to``) as the contract asks, each acknowledged (acks=all)."""
    topic = settings.topic("outbound.commands.v1")
    for n, name in enumerate(names):
        to = recipients[n % len(recipients)]
        await producer.send_and_wait(
            topic,
            send_command(name, channel_id, to),
            key=f"{channel_id}:{to}".encode(),
            headers=CE_HEADERS,
        )


async def messages_by_command(
    sm: async_sessionmaker[AsyncSession], names: list[str]
) -> dict[str, list[OutboxMessage]]:
    async with sm() as session:
        rows = await session.scalars(
            select(OutboxMessage).where(OutboxMessage.command_id.in_(names))
        )
        out: dict[str, list[OutboxMessage]] = {}
        for row in rows:
            out.setdefault(row.command_id, []).append(row)
        return out


async def unpublished_events(sm: async_sessionmaker[AsyncSession]) -> int:
    async with sm() as session:
        rows = await session.scalars(
            select(OutboxEvent.id).where(OutboxEvent.published_at.is_(None))
        )
        return len(list(rows))


def lifecycle_types(records: list[dict[str, Any]]) -> dict[str, Counter[str]]:
    """command id → how many *distinct* events of each type it has on the events topic."""
    seen: set[str] = set()
    out: dict[str, Counter[str]] = {}
    for record in records:
        event = record["event"]
        if event["id"] in seen:
            continue
        seen.add(event["id"])
        out.setdefault(event["data"]["command_id"], Counter())[event["type"]] += 1
    return out


def duplicate_records(records: list[dict[str, Any]]) -> int:
    """Copies beyond the first of each CloudEvents id."""
    return sum(c - 1 for c in Counter(r["event"]["id"] for r in records).values())
