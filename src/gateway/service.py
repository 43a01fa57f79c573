"""The ingress service: turn a verified webhook's events into durable, deduplicated records.

Durability and dedup, per webhook (``Gateway.accept``)
-----------------------------------------------------
1. One PostgreSQL round trip inside a transaction (``repository.claim``): insert the event ids
   into ``gateway_dedup`` (``ON CONFLICT DO NOTHING RETURNING``: only new ids come back),
   archive the raw body if anything is new, and learn which of the webhook's conversations
   still have events in the spool.
2. New events are published to ``inbound.v1`` (acks=all, key = conversation id) and awaited,
   within ``gateway_publish_timeout_seconds``. Events of a conversation that has spooled
   events, or that failed/timed out (and the later events of the same conversation in this
   webhook), are written to ``gateway_spool`` in the same transaction instead.
3. COMMIT, and only then the endpoint answers 200.

Commit cost: the gateway's connections run with ``synchronous_commit = off``, so a commit
holding only dedup and archive rows does not wait for the WAL flush. Those events are already
durable on Kafka (acks=all); a PostgreSQL crash within the flush delay (about 3 x wal_writer_delay)
can only lose dedup rows (→ a later redelivery is published again, same ids) and archive rows
(the archive is best effort). A transaction that writes spool rows switches back to
``synchronous_commit = on`` before committing: there PostgreSQL is the only copy.

The dedup rows stay uncommitted (row-locked) while we publish, so:

* a crash or a failed COMMIT after the broker acknowledged leaves no dedup row; the platform,
  which got no 200, retries and we publish again with the **same deterministic ids**: delivery
  is at-least-once with stable ids (consumers can dedup on ``id``); never lost;
* two concurrent deliveries of the same webhook serialise on the unique index: the second
  waits for the first to commit and then sees the ids as duplicates (or claims them if the
  first rolled back);
* a publish that timed out may still be delivered later by the producer: the spool then
  publishes the same ids again (at-least-once, stable ids).

Degraded modes
--------------
* Broker down or slow: events go to the spool and the webhook still gets 200. After a failed
  publish the gateway spools directly for ``gateway_broker_backoff_seconds`` instead of
  waiting for the broker on every request. The relay (``gateway.relay``) publishes the spool.
* PostgreSQL down (channel cached): events are published without dedup or archive (they are
  durable on Kafka, ids are stable) and counted as ``undeduplicated``. Per-conversation order
  with events spooled earlier cannot be guaranteed then; this is the price of answering 200
  as the contract asks ("503 only when nothing durable could be written").
* Both down: 503, the platform retries.

Ordering: events acknowledged before a later webhook arrives are published before that
webhook's events of the same conversation (the spool check in step 1 sees every committed
spool row). Two webhooks of one conversation in flight at the same time have no order to keep.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from sqlalchemy.engine import make_url

import normalizer
from gateway import repository as repo
from gateway.cache import ChannelCache
from gateway.errors import NotDurable
from gateway.metrics import EVENTS
from switchboard.channels.service import ChannelWithSecrets
from switchboard.kafka import CE_HEADERS
from switchboard.logging import get_logger
from switchboard.resources import Resources

log = get_logger(__name__)

DB_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)
RELAY_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, ConnectionError)


@dataclass(frozen=True, slots=True)
class Accepted:
    events: int
    new: int
    duplicates: int
    published: int
    spooled: int
    deduplicated: bool = True


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes


def asyncpg_dsn(sqlalchemy_url: str) -> str:
    return make_url(sqlalchemy_url).set(drivername="postgresql").render_as_string(False)


class Gateway:
    """The long-lived state of the ingress in one process: DB pool, channel cache, producer."""

    def __init__(self, resources: Resources, pool: asyncpg.Pool) -> None:
        self.resources = resources
        self.settings = resources.settings
        self.producer = resources.producer
        self.pool = pool
        self.topic = self.settings.topic("inbound.v1")
        self.channels = ChannelCache(
            resources.sessionmaker,
            resources.secret_box,
            self.settings.gateway_channel_cache_ttl_seconds,
        )
        self.broker_down_until = 0.0
        self.spool_written = asyncio.Event()
        """Set when this process spooled something: wakes the relay."""
        self.unresolved_sends: set[asyncio.Future[Any]] = set()
        """Sends that timed out but may still reach the broker (then: a duplicate, same id)."""

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, resources: Resources) -> AsyncIterator[Gateway]:
        settings = resources.settings
        pool = await asyncpg.create_pool(
            asyncpg_dsn(settings.database_url.get_secret_value()),
            min_size=0,
            max_size=settings.gateway_db_pool_size,
            timeout=settings.gateway_db_timeout_seconds,
            command_timeout=max(10.0, settings.gateway_publish_timeout_seconds * 3),
            # Commits do not wait for the WAL flush unless a spool row is in them (see accept).
            server_settings={"synchronous_commit": "off"},
        )
        try:
            yield cls(resources, pool)
        finally:
            await pool.close()

    # ---- channels -------------------------------------------------------------------------

    async def channel(self, channel_id: uuid.UUID) -> ChannelWithSecrets | None:
        return await self.channels.get(channel_id)

    # ---- publishing -----------------------------------------------------------------------

    def broker_suspect(self) -> bool:
        return time.monotonic() < self.broker_down_until

    async def publish(self, records: Sequence[Record]) -> list[bool]:
        """Send every record (in order) and wait for acks=all within the publish timeout.

        Returns per-record success. Never raises for broker trouble: a failure marks the
        broker suspect for ``gateway_broker_backoff_seconds``.
        """
        if not records:
            return []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.gateway_publish_timeout_seconds
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout_at(deadline):
                for record in records:
                    futures.append(
                        await self.producer.send(
                            record.topic, record.value, key=record.key, headers=CE_HEADERS
                        )
                    )
        except Exception as exc:  # KafkaError, TimeoutError, producer closed, …
            log.warning("gateway.publish_failed", error=type(exc).__name__, sent=len(futures))
        if futures:
            await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        ok: list[bool] = []
        for index in range(len(records)):
            future = futures[index] if index < len(futures) else None
            if future is None:
                ok.append(False)
            elif not future.done():
                self.unresolved_sends.add(future)
                future.add_done_callback(self._resolved)
                ok.append(False)
            else:
                ok.append(not future.cancelled() and future.exception() is None)
        if not all(ok):
            self.broker_down_until = time.monotonic() + self.settings.gateway_broker_backoff_seconds
        return ok

    def _resolved(self, future: asyncio.Future[Any]) -> None:
        self.unresolved_sends.discard(future)
        if not future.cancelled():
            future.exception()  # retrieved: a late failure is expected, a late success fine

    def record(self, event: normalizer.InboundEvent) -> Record:
        return Record(self.topic, event.subject.encode(), normalizer.dump_event(event))

    # ---- the hot path ---------------------------------------------------------------------

    async def accept(
        self,
        *,
        platform: str,
        channel: ChannelWithSecrets,
        events: Sequence[normalizer.InboundEvent],
        body: bytes,
        content_type: str | None,
        archive_headers: dict[str, str],
    ) -> Accepted:
        unique: dict[str, normalizer.InboundEvent] = {}
        for event in events:
            unique.setdefault(event.id, event)
        batch = list(unique.values())
        try:
            acquire = self.pool.acquire(timeout=self.settings.gateway_db_timeout_seconds)
            conn = await acquire.__aenter__()
        except DB_ERRORS as exc:
            log.warning("gateway.database_unavailable", error=type(exc).__name__)
            return await self._accept_without_database(platform, batch, len(events))
        stage = "claim"
        published = 0
        spooled: list[normalizer.InboundEvent] = []
        try:
            async with conn.transaction():
                claim = await repo.claim(
                    conn,
                    event_ids=list(unique),
                    conversations=sorted({e.subject for e in batch}),
                    channel_id=channel.id,
                    platform=platform,
                    account_id=channel.account_id,
                    content_type=content_type,
                    headers=archive_headers,
                    body=body,
                )
                new = [e for e in batch if e.id in claim.new_ids]
                if not new:
                    EVENTS.labels(platform, "duplicate").inc(len(events))
                    return Accepted(len(events), 0, len(events), 0, 0)
                stage = "publish"
                blocked = set(claim.spooled_conversations)
                if self.broker_suspect():
                    blocked.update(e.subject for e in new)
                direct = [e for e in new if e.subject not in blocked]
                ok = dict(
                    zip(
                        (e.id for e in direct),
                        await self.publish([self.record(e) for e in direct]),
                        strict=True,
                    )
                )
                for event in new:
                    if event.subject in blocked or not ok.get(event.id, False):
                        blocked.add(event.subject)
                        spooled.append(event)
                    else:
                        published += 1
                if spooled:
                    stage = "spool"
                    await repo.spool_durably(
                        conn,
                        [
                            repo.SpoolRow(e.id, platform, self.topic, e.subject, r.value)
                            for e in spooled
                            for r in (self.record(e),)
                        ],
                    )
                stage = "commit"
        except DB_ERRORS as exc:
            log.warning("gateway.database_failed", stage=stage, error=type(exc).__name__)
            if stage == "claim":
                return await self._accept_without_database(platform, batch, len(events))
            if stage == "commit" and not spooled:
                # Everything is on Kafka already: durable. The dedup rows are lost, so a
                # redelivery would publish the same ids again (at-least-once, stable ids).
                EVENTS.labels(platform, "undeduplicated").inc(published)
                return Accepted(len(events), published, 0, published, 0, deduplicated=False)
            raise NotDurable from None
        finally:
            await acquire.__aexit__(None, None, None)
        duplicates = len(events) - len(new)
        if spooled:
            self.spool_written.set()
            EVENTS.labels(platform, "spooled").inc(len(spooled))
        EVENTS.labels(platform, "published").inc(published)
        if duplicates:
            EVENTS.labels(platform, "duplicate").inc(duplicates)
        return Accepted(len(events), len(new), duplicates, published, len(spooled))

    async def _accept_without_database(
        self, platform: str, batch: list[normalizer.InboundEvent], count: int
    ) -> Accepted:
        results = await self.publish([self.record(e) for e in batch])
        if not all(results):
            raise NotDurable
        EVENTS.labels(platform, "undeduplicated").inc(len(batch))
        return Accepted(count, len(batch), count - len(batch), len(batch), 0, deduplicated=False)


def received_now() -> datetime:
    return datetime.now(UTC)
