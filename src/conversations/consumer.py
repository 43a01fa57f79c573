"""The conversation consumer: ``inbound.v1`` and ``outbound.events.v1`` in one consumer group
(``conversations_consumer_group``), so replicas share the partitions.

Each polled batch (at most ``conversations_consumer_batch_size`` records) is applied in one
transaction, each record in its own savepoint: a record whose values PostgreSQL refuses (a data
or integrity error: too long, invalid), or that names a conversation inconsistently, is skipped
and logged ``conversations.record_skipped``, never blocking its partition. Offsets are
committed after the transaction. Any other failure (database or broker away) drops the
consumer without committing; a new one starts after a back-off and the uncommitted records
come back (every effect is idempotent: timeline entries are unique per message, states move
forward, episodes open and close once).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from conversations.inbound import apply_inbound
from conversations.keys import contact_key, inbound_peer
from conversations.lifecycle import apply_lifecycle
from conversations.models import CONTACT_KEY_MAX
from conversations.service import Unrecordable, lock_in_order
from infra.aio import abandon, first_of
from infra.dberrors import DATA_EXCEPTION, INTEGRITY_VIOLATION, data_error
from infra.kafka import create_consumer
from infra.logging import get_logger
from infra.resources import Resources
from infra.settings import Settings

log = get_logger(__name__)

Handler = Callable[[AsyncSession, Settings, dict[str, Any], datetime], Awaitable[None]]
_BACKOFF = (0.5, 15.0)
_STOP_TIMEOUT = 5.0


def _decode(value: bytes | None) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _record_fault(exc: BaseException) -> str | None:
    """Why a record can never be stored (a data exception, or an integrity violation: the
    handlers insert rows keyed by what the event names), or None for a failure worth retrying
    (connection lost, timeout)."""
    if isinstance(exc, Unrecordable):
        return "unrecordable"
    return data_error(exc, (DATA_EXCEPTION, INTEGRITY_VIOLATION))


def _lock_key(record: Any, event: dict[str, Any]) -> tuple[uuid.UUID, str] | None:
    """(channel, contact key) of the conversation a record touches, read as the handlers do."""
    data = event.get("data")
    if not isinstance(data, dict):
        return None
    platform = data.get("platform")
    if not isinstance(platform, str):
        return None
    if record.topic.endswith("inbound.v1"):
        conversation_id, account = data.get("conversation_id"), data.get("account_id")
        if not isinstance(conversation_id, str) or not isinstance(account, str | None):
            return None
        peer = inbound_peer(platform, account, conversation_id)
    else:
        peer = data.get("to") if isinstance(data.get("to"), str) else None
    if not peer or "\x00" in peer or len(peer) > CONTACT_KEY_MAX:
        return None
    try:
        return uuid.UUID(str(data.get("channel_id"))), contact_key(platform, peer)
    except ValueError:
        return None


async def handle_batch(
    resources: Resources,
    records: list[Any],
    handlers: dict[str, Handler],
    now: datetime | None = None,
) -> None:
    """Apply ``records`` (in offset order per partition) in one transaction and commit.

    The first pass runs the whole batch without savepoints (two round trips less per record).
    Only if a record turns out to be unstorable is the batch applied again, each record in its
    own savepoint, skipping the faulty ones."""
    now = now or datetime.now(UTC)
    decoded = [(handlers.get(r.topic), _decode(r.value), r) for r in records]
    work = [(h, e, r) for h, e, r in decoded if h is not None and e is not None]
    try:
        async with resources.sessionmaker() as session:
            await lock_in_order(session, {k for _, e, r in work if (k := _lock_key(r, e))})
            for handler, event, _ in work:
                await handler(session, resources.settings, event, now)
            await session.commit()
        return
    except (DBAPIError, Unrecordable) as exc:
        if _record_fault(exc) is None:
            raise
    async with resources.sessionmaker() as session:
        for handler, event, record in work:
            try:
                async with session.begin_nested():
                    await handler(session, resources.settings, event, now)
            except (DBAPIError, Unrecordable) as exc:
                state = _record_fault(exc)
                if state is None:
                    raise
                log.warning(
                    "conversations.record_skipped",
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                    reason=state,
                )
        await session.commit()


async def _consume(
    resources: Resources,
    consumer: AIOKafkaConsumer,
    stop: asyncio.Event,
    handlers: dict[str, Handler],
) -> None:
    while not stop.is_set():
        batch = await consumer.getmany(
            timeout_ms=500, max_records=resources.settings.conversations_consumer_batch_size
        )
        if not batch:
            continue
        records = [
            r for tp in sorted(batch, key=lambda t: (t.topic, t.partition)) for r in batch[tp]
        ]
        await handle_batch(resources, records, handlers)
        offsets = {tp: rs[-1].offset + 1 for tp, rs in batch.items() if rs}
        await consumer.commit(offsets)


async def run_consumer(resources: Resources, stop: asyncio.Event) -> None:
    """Consume until ``stop``; a failed consumer is replaced after a back-off."""
    settings = resources.settings
    handlers: dict[str, Handler] = {
        settings.topic("inbound.v1"): apply_inbound,
        settings.topic("outbound.events.v1"): apply_lifecycle,
    }
    backoff = _BACKOFF[0]
    while not stop.is_set():
        consumer = create_consumer(
            settings,
            *handlers,
            group_id=settings.conversations_consumer_group,
            session_timeout_ms=settings.outbox_consumer_session_timeout_ms,
            heartbeat_interval_ms=max(settings.outbox_consumer_session_timeout_ms // 3, 300),
        )
        starting = asyncio.ensure_future(consumer.start())
        try:
            if not await first_of(starting, stop):
                abandon(starting)
                break
            starting.result()
            log.info("conversations.consumer_started")
            await _consume(resources, consumer, stop, handlers)
            backoff = _BACKOFF[0]
        except Exception as exc:
            log.error("conversations.consumer_failed", error=repr(exc))
        finally:
            with contextlib.suppress(Exception, TimeoutError):
                async with asyncio.timeout(_STOP_TIMEOUT):
                    await consumer.stop()
        if not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), backoff)
            backoff = min(backoff * 2, _BACKOFF[1])
