"""Retention: the outbox tables stop growing once their rows are old and finished.

Every ``outbox_retention_interval`` seconds one replica at a time (``infra.leader``)
deletes, in statements of at most ``outbox_retention_batch_size`` rows (short locks, each its
own transaction), until nothing is left to delete:

* **messages** in a finished state (``sent``, ``delivered``, ``read``, ``failed``, ``dead``,
  ``cancelled``) created *and* last changed more than ``outbox_retention_days`` ago, with their
  attempts (``ON DELETE CASCADE``). ``sent`` counts as finished once the window has passed:
  a receipt a month late changes nothing worth keeping. ``queued``, ``sending`` and
  ``retrying`` rows are never touched, whatever their age: the state is checked again on the
  locked row (``FOR UPDATE SKIP LOCKED`` re-evaluates the condition), so a message redriven
  while the purge runs stays;
* **lifecycle events** published more than ``outbox_retention_days`` ago (never an unpublished
  one: the relay still owes it to Kafka);
* **pending receipts** past their ``expires_at`` (the receipts settler also drops them; this
  is the bounded backstop).

Spooled inbound events (``gateway_spool``) are deleted by the gateway's relay as it publishes
them, and its dedup and archive rows by the gateway's purger: nothing to do here.

Log events: ``outbox.retention_purged`` (counts per table), ``leader.failed``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from infra.leader import AdvisoryLeader, run_as_leader
from infra.logging import get_logger
from infra.resources import Resources
from infra.settings import Settings
from outbox import metrics

log = get_logger(__name__)

RETENTION_LOCK = 0x5357_5254  # "SWRT": one retention purge across replicas

FINISHED_STATES = ("sent", "delivered", "read", "failed", "dead", "cancelled")

# ``id = ANY(ARRAY(subquery))``: the batch is picked first, then deleted by primary key. With
# ``id IN (subquery)`` the planner may hash-join the batch against a scan of the whole table.
_PURGES: Mapping[str, str] = {
    "outbox_messages": """
        DELETE FROM outbox_messages WHERE id = ANY(ARRAY(
            SELECT id FROM outbox_messages
            WHERE state IN ('sent', 'delivered', 'read', 'failed', 'dead', 'cancelled')
              AND created_at < :cutoff AND updated_at < :cutoff
            LIMIT :batch FOR UPDATE SKIP LOCKED))
    """,
    "outbox_events": """
        DELETE FROM outbox_events WHERE id = ANY(ARRAY(
            SELECT id FROM outbox_events
            WHERE published_at IS NOT NULL AND published_at < :cutoff
              AND created_at < :cutoff
            LIMIT :batch FOR UPDATE SKIP LOCKED))
    """,
    "outbox_pending_receipts": """
        DELETE FROM outbox_pending_receipts WHERE id = ANY(ARRAY(
            SELECT id FROM outbox_pending_receipts WHERE expires_at < :now
            LIMIT :batch FOR UPDATE SKIP LOCKED))
    """,
}
PURGES = {table: text(sql) for table, sql in _PURGES.items()}


def cutoff(settings: Settings, now: datetime) -> datetime:
    return now - timedelta(days=settings.outbox_retention_days)


async def purge_once(
    conn: AsyncConnection,
    settings: Settings,
    *,
    now: datetime | None = None,
    stop: asyncio.Event | None = None,
) -> dict[str, int]:
    """Delete every expired row, a batch per statement, on an autocommit connection; return
    the counts per table. Stops between statements once ``stop`` is set."""
    now = now or datetime.now(UTC)
    params = {
        "cutoff": cutoff(settings, now),
        "now": now,
        "batch": settings.outbox_retention_batch_size,
    }
    deleted: dict[str, int] = {}
    for table, statement in PURGES.items():
        total = 0
        while stop is None or not stop.is_set():
            count = (await conn.execute(statement, params)).rowcount
            total += count
            if count < settings.outbox_retention_batch_size:
                break
            await asyncio.sleep(0)  # let the event loop breathe between batches
        deleted[table] = total
        if total:
            metrics.RETENTION_DELETED.labels(table).inc(total)
    if any(deleted.values()):
        log.info("outbox.retention_purged", **deleted)
    return deleted


async def run_retention(resources: Resources, stop: asyncio.Event) -> None:
    """Purge every ``outbox_retention_interval`` seconds while this replica holds the lock."""
    settings = resources.settings

    async def purge(conn: AsyncConnection) -> None:
        await purge_once(conn, settings, stop=stop)

    await run_as_leader(
        AdvisoryLeader(resources.engine, RETENTION_LOCK, "outbox.retention"),
        purge,
        interval=settings.outbox_retention_interval,
        stop=stop,
        round_timeout=max(settings.outbox_retention_interval, 60.0),
    )
