"""Lifecycle events: written to ``outbox_events`` in the same transaction as the state change
(transactional outbox), then relayed to ``switchboard.outbound.events.v1`` in commit order.

One relay publishes at a time (a PostgreSQL advisory lock), so events of one conversation reach
Kafka in the order their transitions were committed, whatever the number of replicas. A crash
between the Kafka ack and marking the rows published republishes them with the same CloudEvents
``id``: consumers dedup on it.

A row Kafka can never take (too large for a record: ``MessageSizeTooLargeError`` and kin) must
not block the rows behind it. It is published shortened instead: same envelope and id,
``data.metadata`` replaced by ``{"_truncated": true}`` (logged ``outbox.event_truncated``), in
its place when the producer refuses it (its own size check, the usual case), after the rest of
its batch when the broker refuses it (a broker limit below the producer's). If even the short
form is refused, the row is set aside (marked published, logged ``outbox.event_unpublishable``)
and the relay goes on. Any other failure (broker away, timeout) rolls the batch back and it is
retried whole, as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime

import orjson
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
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
_TRUNCATED_METADATA = {"_truncated": True}

UNPUBLISHABLE_ERRORS: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
"""Failures that concern one record and never go away on retry (it is too large for the
producer or the broker). Raised by ``producer.send`` (client-side size check) or by its future
(the broker's own limit)."""


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
    """Publish the oldest unpublished events, in commit order; return how many rows were
    handled (published, shortened or set aside)."""
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
        futures: list[asyncio.Future[object] | None] = []
        for row in rows:
            try:
                futures.append(await _send(resources, row.topic, row.key, row.value))
            except UNPUBLISHABLE_ERRORS:  # refused before sending: the short form, in its place
                futures.append(await _send_shortened(resources, row))
        results = await asyncio.gather(
            *(f for f in futures if f is not None), return_exceptions=True
        )
        failures = [r for r in results if isinstance(r, BaseException)]
        for failure in failures:
            if not isinstance(failure, UNPUBLISHABLE_ERRORS):
                raise failure  # broker away, timeout…: the whole batch again, later
        if failures:  # refused by the broker itself (its limit is below the producer's)
            outcomes = iter(results)
            refused = [
                row
                for row, future in zip(rows, futures, strict=True)
                if future is not None and isinstance(next(outcomes), BaseException)
            ]
            retries = [(row, await _send_shortened(resources, row)) for row in refused]
            for row, retry in retries:
                if retry is None:
                    continue
                try:
                    await retry
                except UNPUBLISHABLE_ERRORS:
                    _unpublishable(row)
        await session.execute(
            update(OutboxEvent)
            .where(OutboxEvent.id.in_([r.id for r in rows]))
            .values(published_at=datetime.now(UTC))
        )
    return len(rows)


async def _send(resources: Resources, topic: str, key: str, value: bytes) -> asyncio.Future[object]:
    future: asyncio.Future[object] = await resources.producer.send(
        topic, value, key=key.encode(), headers=CE_HEADERS
    )
    return future


def shorten(value: bytes) -> bytes | None:
    """The event without its (possibly large) ``data.metadata``: same envelope, same id.
    None if the stored value is not a lifecycle event at all."""
    try:
        envelope = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(envelope, dict) or not isinstance(envelope.get("data"), dict):
        return None
    envelope["data"]["metadata"] = _TRUNCATED_METADATA
    return orjson.dumps(envelope)


async def _send_shortened(resources: Resources, row: OutboxEvent) -> asyncio.Future[object] | None:
    """Send the short form of a row the broker cannot take; None (and the row set aside) if
    even that is refused before sending."""
    shortened = shorten(row.value)
    if shortened is None:
        _unpublishable(row)
        return None
    log.warning("outbox.event_truncated", event_row=row.id, size=len(row.value))
    try:
        return await _send(resources, row.topic, row.key, shortened)
    except UNPUBLISHABLE_ERRORS:
        _unpublishable(row)
        return None


def _unpublishable(row: OutboxEvent) -> None:
    log.error("outbox.event_unpublishable", event_row=row.id, size=len(row.value))


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
