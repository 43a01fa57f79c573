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
and the relay goes on.

Any other failure (broker away, timeout) leaves rows for the next pass, but only those: the
rows the broker acknowledged are marked published, except that per key (per conversation)
marking stops at the first row not acknowledged, and once a ``send`` itself fails nothing
behind it is sent. So a broker outage in the middle of a batch republishes only what was not
acknowledged. A conversation's stream may then hold a row twice (same id), but the copies
published last are in commit order: a row is never left published only ahead of an earlier row
of its key.

Traces: a row is staged with its message's ``traceparent`` (the command's trace) and published
with a ``traceparent`` header, in a PRODUCER span of that trace when tracing is on
(``infra.telemetry``).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from aiokafka.errors import MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from infra import cloudevents, telemetry
from infra.kafka import CE_HEADERS
from infra.logging import get_logger
from infra.resources import Resources
from infra.settings import Settings
from outbox.contracts import LifecycleError, LifecycleEventData, LifecycleEventType
from outbox.models import OutboxEvent, OutboxMessage

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
        content_kind=_content_kind(message.content),
    )
    return cloudevents.encode(
        event_id=str(uuid.uuid4()),
        source=f"/switchboard/outbox/{message.channel_id}",
        event_type=event_type,
        time=now or datetime.now(UTC),
        subject=message.conversation_key,
        data=data.model_dump(mode="json"),
    )


def _content_kind(content: object) -> str | None:
    kind = content.get("kind") if isinstance(content, dict) else None
    return kind if isinstance(kind, str) else None


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
            traceparent=message.traceparent,
        )
    )


def rows_to_mark(keys: Sequence[str], settled: Sequence[bool]) -> list[int]:
    """Indexes of the rows of a batch (in commit order) to mark published: every settled row
    (acknowledged by the broker, or shortened / set aside) unless an earlier row of the same key
    is not settled. That earlier row is published again by the next pass, and so are the rows
    of its key behind it, so each key's events end up in Kafka in commit order."""
    unsettled_keys: set[str] = set()
    marked: list[int] = []
    for index, (key, done) in enumerate(zip(keys, settled, strict=True)):
        if not done:
            unsettled_keys.add(key)
        elif key not in unsettled_keys:
            marked.append(index)
    return marked


async def relay_once(resources: Resources) -> int:
    """Publish the oldest unpublished events, in commit order; return how many rows were
    handled (published, shortened or set aside) and marked published.

    Only what the broker acknowledged is marked (per key, up to its first unacknowledged row);
    the rest is left for the next pass. If anything failed (broker away, timeout…), the first
    failure is raised once the acknowledged rows are marked, so ``run_relay`` backs off."""
    failure: BaseException | None = None
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
            future: asyncio.Future[object] | None
            try:
                try:
                    future = await _send(resources, row.topic, row.key, row.value, row.traceparent)
                except UNPUBLISHABLE_ERRORS:  # refused before sending: the short form, in place
                    future = await _send_shortened(resources, row)
            except Exception as exc:  # no metadata, buffer full…: this row and the rest wait
                failure = exc
                break
            futures.append(future)
        results = await asyncio.gather(
            *(f for f in futures if f is not None), return_exceptions=True
        )
        outcomes = iter(results)
        settled = [False] * len(rows)  # rows never sent (after a failed send) stay unsettled
        failed_keys: set[str] = set()  # keys with an earlier row that failed for good this pass
        refused: list[int] = []
        for index, future in enumerate(futures):
            result = None if future is None else next(outcomes)  # None: set aside
            if not isinstance(result, BaseException):
                settled[index] = True
            elif isinstance(result, UNPUBLISHABLE_ERRORS):
                # refused by the broker itself (its limit is below the producer's): shortened
                # after the rest of the batch, unless its key already waits for the next pass
                if rows[index].key not in failed_keys:
                    refused.append(index)
            else:
                failure = failure or result
                failed_keys.add(rows[index].key)
        for index in refused:
            retried = await _retry_shortened(resources, rows[index])
            if isinstance(retried, BaseException):
                failure = failure or retried
            else:
                settled[index] = True
        marked = [rows[i] for i in rows_to_mark([r.key for r in rows], settled)]
        if marked:
            await session.execute(
                update(OutboxEvent)
                .where(OutboxEvent.id.in_([r.id for r in marked]))
                .values(published_at=datetime.now(UTC))
            )
    if failure is not None:
        log.warning("outbox.relay_incomplete", marked=len(marked), left=len(rows) - len(marked))
        raise failure
    return len(marked)


async def _retry_shortened(resources: Resources, row: OutboxEvent) -> BaseException | None:
    """Publish the short form of a row the broker refused and wait for the ack. None when done
    (published, or set aside because even the short form is refused); the failure otherwise
    (broker away…: the row waits for the next pass)."""
    try:
        retry = await _send_shortened(resources, row)
        if retry is not None:
            await retry
    except UNPUBLISHABLE_ERRORS:
        _unpublishable(row)
    except Exception as exc:
        return exc
    return None


async def _send(
    resources: Resources, topic: str, key: str, value: bytes, traceparent: str | None
) -> asyncio.Future[object]:
    """Hand one row to the producer, in a PRODUCER span of its command's trace; the record's
    ``traceparent`` header is that span's context (the stored one while tracing is off)."""
    with telemetry.span(
        f"send {topic}",
        kind=telemetry.SpanKind.PRODUCER,
        parent=traceparent,
        attributes=telemetry.producer_attributes(topic) if telemetry.enabled() else None,
    ):
        headers = telemetry.kafka_headers(CE_HEADERS, telemetry.outgoing())
        future: asyncio.Future[object] = await resources.producer.send(
            topic, value, key=key.encode(), headers=headers
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
        return await _send(resources, row.topic, row.key, shortened, row.traceparent)
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
