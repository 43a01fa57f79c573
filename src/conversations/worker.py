"""The conversation worker: the consumer, the unanswered timer, the relay and retention.

Runs in ``switchboard outbox`` and ``switchboard dev`` (beside the delivery worker), or in the
HTTP process with ``conversations_api_runs_workers``. Every part scales out: the consumer
shares partitions in its group, the timer claims rows with ``SKIP LOCKED``, one relay publishes
at a time (advisory lock).
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete

from conversations.consumer import run_consumer
from conversations.models import Conversation
from conversations.relay import purge, relay_once, run_relay
from conversations.timers import fire_due
from infra.logging import get_logger
from infra.resources import Resources

log = get_logger(__name__)

_PURGE_EVERY = timedelta(minutes=5)
_PUBLISHED_KEPT = timedelta(days=1)


async def timer_pass(resources: Resources, now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    async with resources.sessionmaker() as session, session.begin():
        return await fire_due(session, resources.settings, now)


async def retention_pass(resources: Resources, now: datetime) -> None:
    keep = timedelta(days=resources.settings.conversations_retention_days)
    async with resources.sessionmaker() as session, session.begin():
        await session.execute(
            delete(Conversation).where(Conversation.last_activity_at < now - keep)
        )
    await purge(resources, now, _PUBLISHED_KEPT)


async def run_timers(resources: Resources, stop: asyncio.Event) -> None:
    interval = resources.settings.conversations_timer_interval
    last_purge: datetime | None = None
    while not stop.is_set():
        now = datetime.now(UTC)
        try:
            while await timer_pass(resources, now) and not stop.is_set():
                pass
            if last_purge is None or now - last_purge >= _PURGE_EVERY:
                await retention_pass(resources, now)
                last_purge = now
        except Exception as exc:
            log.warning("conversations.timer_failed", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def run_worker(resources: Resources, stop: asyncio.Event) -> None:
    """Until ``stop``; then the relay publishes what is left (if the broker answers)."""
    relay_stop = asyncio.Event()

    async def consume_then_stop_relay() -> None:
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(run_consumer(resources, stop), name="conversations-consumer")
                group.create_task(run_timers(resources, stop), name="conversations-timers")
        finally:
            relay_stop.set()

    async def relay() -> None:
        await run_relay(resources, relay_stop, resources.settings.conversations_relay_interval)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5.0):
                while await relay_once(resources):
                    pass

    async with asyncio.TaskGroup() as group:
        group.create_task(consume_then_stop_relay(), name="conversations")
        group.create_task(relay(), name="conversations-relay")
