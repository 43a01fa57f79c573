"""Lifecycle events: written to ``outbox_events`` in the same transaction as the state change
(transactional outbox), then relayed to ``switchboard.outbound.events.v1`` in commit order.

One relay publishes at a time (a PostgreSQL advisory lock), so events of one conversation reach
Kafka in the order their transitions were committed, whatever the number of replicas. A crash
between the Kafka ack and marking the rows published republishes them with the same CloudEvents
``id``: consumers dedup on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import orjson
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from outbox.contracts import LifecycleError, LifecycleEventData, LifecycleEventType
from outbox.models import OutboxEvent, OutboxMessage
from switchboard.kafka import CE_HEADERS
from switchboard.logging import get_logger
from switchboard.resources import Resources
from switchboard.settings import Settings

log = get_logger(__name__)

_RELAY_LOCK = 0x5357_4F42  # "SWOB": one lifecycle relay at a time across replicas
_RELAY_BATCH = 500


def build_event(
    message: OutboxMessage,
    event_type: LifecycleEventType,
    *,
    error: LifecycleError | None = None,
    now: datetime | None = None,
) -> bytes:
    """The CloudEvents JSON of one transition. Built once and stored, so a republished row keeps
    its id; a fresh id per transition keeps a redriven message's second ``message.queued``
    distinct from its first."""
    data = LifecycleEventData(
        message_id=str(message.id),
        command_id=message.command_id,
        channel_id=str(message.channel_id),
        platform=message.platform,
        to=message.recipient,
        platform_message_id=message.platform_message_id,
        attempt=message.attempts,
        error=error,
        metadata=message.message_metadata or {},
    )
    envelope = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": f"/switchboard/outbox/{message.channel_id}",
        "type": event_type,
        "time": (now or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        "subject": message.conversation_key,
        "datacontenttype": "application/json",
        "data": data.model_dump(mode="json"),
    }
    return orjson.dumps(envelope)


def emit(
    session: AsyncSession,
    settings: Settings,
    message: OutboxMessage,
    event_type: LifecycleEventType,
    *,
    error: LifecycleError | None = None,
) -> None:
    """Stage a lifecycle event in the caller's transaction (nothing is published here)."""
    session.add(
        OutboxEvent(
            topic=settings.topic("outbound.events.v1"),
            key=message.conversation_key,
            value=build_event(message, event_type, error=error),
        )
    )


async def relay_once(resources: Resources) -> int:
    """Publish the oldest unpublished events; return how many were published."""
    async with resources.sessionmaker() as session, session.begin():
        locked = await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _RELAY_LOCK}
        )
        if not locked:
            return 0
        rows = (
            await session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.published_at.is_(None))
                .order_by(OutboxEvent.id)
                .limit(_RELAY_BATCH)
            )
        ).all()
        if not rows:
            return 0
        futures = [
            await resources.producer.send(
                row.topic, row.value, key=row.key.encode(), headers=CE_HEADERS
            )
            for row in rows
        ]
        await asyncio.gather(*futures)
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_([r.id for r in rows]))
            .values(published_at=datetime.now(UTC))
        )
    return len(rows)


async def run_relay(resources: Resources, stop: asyncio.Event, idle_interval: float = 0.2) -> None:
    """Relay until ``stop`` is set; on broker or database errors, back off and try again."""
    backoff = idle_interval
    while not stop.is_set():
        try:
            published = await relay_once(resources)
            backoff = idle_interval
        except Exception as exc:
            log.warning("outbox.relay_failed", error=type(exc).__name__)
            published = 0
            backoff = min(backoff * 2, 5.0)
        if published == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
