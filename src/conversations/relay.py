"""Relays ``conv_events`` (conversation events and send commands staged by this package) to
Kafka in commit order. One relay publishes at a time across replicas (an advisory lock held by
the pass's transaction). Rows are marked published only up to the first one the broker did not
acknowledge, so a failure republishes (same CloudEvents id) rather than loses or reorders."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from sqlalchemy import delete, select, text, update

from conversations.models import PendingEvent
from infra.kafka import CE_HEADERS
from infra.logging import get_logger
from infra.resources import Resources

log = get_logger(__name__)

_RELAY_LOCK = 0x5357_4356  # "SWCV"
_BATCH = 500


async def relay_once(resources: Resources) -> int:
    """Publish one batch; the number of rows published (0: nothing to do, or another relay
    holds the lock)."""
    async with resources.sessionmaker() as session, session.begin():
        locked = await session.scalar(
            text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _RELAY_LOCK}
        )
        if not locked:
            return 0
        rows = list(
            await session.scalars(
                select(PendingEvent)
                .where(PendingEvent.published_at.is_(None))
                .order_by(PendingEvent.id)
                .limit(_BATCH)
            )
        )
        if not rows:
            return 0
        futures = []
        for row in rows:
            try:
                futures.append(
                    await resources.producer.send(
                        row.topic, row.value, key=row.key.encode(), headers=CE_HEADERS
                    )
                )
            except Exception as exc:  # nothing behind a failed send is sent (order)
                log.warning("conversations.relay_send_failed", error=type(exc).__name__)
                break
        results = await asyncio.gather(*futures, return_exceptions=True)
        acked = 0
        for result in results:
            if isinstance(result, BaseException):
                break
            acked += 1
        if acked:
            await session.execute(
                update(PendingEvent)
                .where(PendingEvent.id.in_([r.id for r in rows[:acked]]))
                .values(published_at=text("now()"))
            )
        if acked < len(rows):
            log.warning("conversations.relay_incomplete", published=acked, pending=len(rows))
        return acked


async def purge(resources: Resources, now: datetime, keep: timedelta) -> None:
    async with resources.sessionmaker() as session, session.begin():
        await session.execute(
            delete(PendingEvent).where(
                PendingEvent.published_at.is_not(None), PendingEvent.published_at < now - keep
            )
        )


async def run_relay(resources: Resources, stop: asyncio.Event, interval: float) -> None:
    while not stop.is_set():
        published = 0
        try:
            published = await relay_once(resources)
        except Exception as exc:
            log.warning("conversations.relay_failed", error=type(exc).__name__)
        if published == 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
