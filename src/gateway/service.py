"""The ingress service: turn a verified webhook's events into durable, deduplicated records.

Durability and dedup (``Gateway.accept``, group commit)
-------------------------------------------------------
Concurrent webhooks are grouped into batches (``gateway.batcher.GroupCommit``); per batch, on
one pooled connection, in one transaction:

1. One PostgreSQL round trip (``repository.claim_batch``): insert the batch's event ids into
   ``gateway_dedup`` (sorted; ``ON CONFLICT DO NOTHING RETURNING``: only new ids come back),
   archive the raw body of every webhook owning a new id (an id carried by several webhooks
   of the batch belongs to the first), and learn which conversations still have events in the
   spool.
2. The new events of the whole batch are published to ``inbound.v1`` (acks=all, key =
   conversation id) and awaited, within ``gateway_publish_timeout_seconds``. Per webhook, as
   before: events of a conversation that has spooled events, or that failed/timed out (and
   the webhook's later events of the same conversation), go to ``gateway_spool`` instead, in
   one statement for the batch.
3. COMMIT, and only then every member's endpoint answers 200 (``BatchPlan.accepted``).

If the spool write or COMMIT fails, a member is still durable when none of its events was
headed for the spool (they are on Kafka): 200 without dedup; the others get 503
(``BatchPlan.after_failed_commit``). A failed claim sends the whole batch down the
"PostgreSQL down" path; a deadlock/serialization failure in the claim is retried once. A slow
publish holds its batch-mates for at most the publish timeout. Releasing the connection after
the batch may fail as well (a stalled server: asyncpg waits for its cancel request): that is
logged (``gateway.release_failed``), the connection dropped, and the members' answers stand.

Commit cost: the gateway's connections run with ``synchronous_commit = off``, so a commit
holding only dedup and archive rows does not wait for the WAL flush. Those events are already
durable on Kafka (acks=all); a PostgreSQL crash within the flush delay (about 3 x wal_writer_delay)
can only lose dedup rows (→ a later redelivery is published again, same ids) and archive rows
(the archive is best effort). A transaction that writes spool rows switches back to
``synchronous_commit = on`` before committing: there PostgreSQL is the only copy.

The dedup rows stay uncommitted (row-locked) while the batch publishes, so:

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
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg  # type: ignore[import-untyped]
from aiokafka.partitioner import DefaultPartitioner
from sqlalchemy.engine import make_url

import normalizer
from gateway import repository as repo
from gateway.batcher import GroupCommit
from gateway.cache import ChannelCache
from gateway.errors import NotDurable
from gateway.metrics import BATCH_SIZE, events_counter
from switchboard import telemetry
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
RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
)


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
    traceparent: str | None = None
    """Sent as the record's ``traceparent`` header (the webhook's trace; not spooled)."""


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
            self.settings.gateway_db_timeout_seconds,
        )
        self.broker_down_until = 0.0
        self.spool_written = asyncio.Event()
        """Set when this process spooled something: wakes the relay."""
        self.unresolved_sends: set[asyncio.Future[Any]] = set()
        """Sends that timed out but may still reach the broker (then: a duplicate, same id)."""
        self._partition_cache: dict[tuple[bytes, int], int] = {}
        self.batcher: GroupCommit[Webhook, Accepted] = GroupCommit(
            self._run_batch,
            max_size=self.settings.gateway_batch_max_size,
            max_delay=self.settings.gateway_batch_max_delay_seconds,
            # Each batch in flight holds a connection; leave two for the relay and purger.
            max_in_flight=max(
                1,
                min(
                    self.settings.gateway_batch_max_in_flight,
                    self.settings.gateway_db_pool_size - 2,
                ),
            ),
        )

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
            reset=_keep_session,
        )
        try:
            gateway = cls(resources, pool)
            try:
                yield gateway
            finally:
                await gateway.batcher.close()
        finally:
            await pool.close()

    # ---- channels -------------------------------------------------------------------------

    async def channel(self, channel_id: uuid.UUID) -> ChannelWithSecrets | None:
        return await self.channels.get(channel_id)

    # ---- publishing -----------------------------------------------------------------------

    def broker_suspect(self) -> bool:
        return time.monotonic() < self.broker_down_until

    async def publish(self, records: Sequence[Record]) -> list[bool]:
        """Send every record and wait for acks=all within the publish timeout.

        Records are grouped into one closed record batch per partition (``send_batch``), in
        their order: a closed batch is sent without waiting for ``linger_ms`` (our callers
        already batch), and costs less per record than ``send``. The partition is the
        producer's default for the key (murmur2), the same one ``send`` would pick.

        Returns per-record success. Never raises for broker trouble: a failure marks the
        broker suspect for ``gateway_broker_backoff_seconds``.
        """
        if not records:
            return []
        with telemetry.span(
            f"send {records[0].topic}",
            kind=telemetry.SpanKind.PRODUCER,
            attributes=telemetry.producer_attributes(records[0].topic, count=len(records))
            if telemetry.enabled()
            else None,
            links=[telemetry.link(r.traceparent) for r in records] if telemetry.enabled() else (),
        ):
            return await self._publish(records)

    async def _publish(self, records: Sequence[Record]) -> list[bool]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.gateway_publish_timeout_seconds
        batch_of = [-1] * len(records)  # record index → index in ``futures``
        futures: list[asyncio.Future[Any]] = []
        try:
            async with asyncio.timeout_at(deadline):
                for batch in await self._record_batches(records):
                    batch.builder.close()
                    future = await self.producer.send_batch(
                        batch.builder, batch.topic, partition=batch.partition
                    )
                    for index in batch.indices:
                        batch_of[index] = len(futures)
                    futures.append(future)
        except Exception as exc:  # KafkaError, TimeoutError, producer closed, …
            log.warning("gateway.publish_failed", error=type(exc).__name__, sent=len(futures))
        if futures:
            await asyncio.wait(futures, timeout=max(0.0, deadline - loop.time()))
        outcome: list[bool] = []
        for future in futures:
            if not future.done():
                self.unresolved_sends.add(future)
                future.add_done_callback(self._resolved)
                outcome.append(False)
            else:
                outcome.append(not future.cancelled() and future.exception() is None)
        ok = [index >= 0 and outcome[index] for index in batch_of]
        if not all(ok):
            self.broker_down_until = time.monotonic() + self.settings.gateway_broker_backoff_seconds
        return ok

    async def _record_batches(self, records: Sequence[Record]) -> list[_PartitionBatch]:
        batches: list[_PartitionBatch] = []
        open_batches: dict[tuple[str, int], _PartitionBatch] = {}
        partitions: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            topic_partitions = partitions.get(record.topic)
            if topic_partitions is None:
                topic_partitions = list(await self.producer.partitions_for(record.topic))
                partitions[record.topic] = topic_partitions
            partition = self._partition_for(record.key, topic_partitions)
            batch = open_batches.get((record.topic, partition))
            appended = batch is not None and batch.append(index, record)
            if not appended:
                batch = _PartitionBatch(record.topic, partition, self.producer.create_batch(), [])
                if not batch.append(index, record):
                    continue  # larger than a whole batch: the broker would refuse it
                open_batches[(record.topic, partition)] = batch
                batches.append(batch)
        return batches

    def _partition_for(self, key: bytes, partitions: list[int]) -> int:
        cache_key = (key, len(partitions))
        partition = self._partition_cache.get(cache_key)
        if partition is None:
            if len(self._partition_cache) >= 100_000:
                self._partition_cache.clear()
            partition = int(_PARTITIONER(key, partitions, partitions))
            self._partition_cache[cache_key] = partition
        return partition

    def _resolved(self, future: asyncio.Future[Any]) -> None:
        self.unresolved_sends.discard(future)
        if not future.cancelled():
            future.exception()  # retrieved: a late failure is expected, a late success fine

    def record(self, event: normalizer.InboundEvent, traceparent: str | None = None) -> Record:
        return Record(self.topic, event.subject.encode(), normalizer.dump_event(event), traceparent)

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
        """Make one webhook's events durable (group commit with concurrent webhooks)."""
        unique: dict[str, normalizer.InboundEvent] = {}
        for event in events:
            unique.setdefault(event.id, event)
        webhook = Webhook(
            platform,
            channel,
            list(unique.values()),
            len(events),
            body,
            content_type,
            archive_headers,
            telemetry.outgoing(),
        )
        return await self.batcher.submit(webhook)

    async def _run_batch(
        self, webhooks: Sequence[Webhook], claimed: Callable[[], None]
    ) -> list[Accepted | BaseException]:
        BATCH_SIZE.observe(len(webhooks))
        owners: dict[str, int] = {}
        for index, webhook in enumerate(webhooks):
            for event in webhook.events:
                owners.setdefault(event.id, index)
        try:
            acquire = self.pool.acquire(timeout=self.settings.gateway_db_timeout_seconds)
            conn = await acquire.__aenter__()
        except DB_ERRORS as exc:
            log.warning("gateway.database_unavailable", error=type(exc).__name__)
            claimed()
            return await self._without_database(webhooks, owners)
        try:
            return await self._batch_in_transaction(conn, webhooks, owners, claimed)
        finally:
            try:
                await acquire.__aexit__(None, None, None)
            except DB_ERRORS as exc:
                # The batch's outcome is settled (published, committed or not): a stalled
                # connection that cannot be reset must not turn it into a 500.
                log.warning("gateway.release_failed", error=type(exc).__name__)
                _terminate(conn)

    async def _batch_in_transaction(
        self,
        conn: asyncpg.Connection,
        webhooks: Sequence[Webhook],
        owners: dict[str, int],
        claimed: Callable[[], None],
    ) -> list[Accepted | BaseException]:
        archive = [
            repo.ArchiveRow(
                w.channel.id,
                w.platform,
                w.channel.account_id,
                w.content_type,
                w.headers,
                w.body,
                len(w.events),
            )
            for w in webhooks
        ]
        conversations = [e.subject for w in webhooks for e in w.events]
        for attempt in (1, 2):
            stage = "claim"
            plan: BatchPlan | None = None
            try:
                async with conn.transaction():
                    claim = await repo.claim_batch(
                        conn, owners=owners, archive=archive, conversations=conversations
                    )
                    claimed()
                    stage = "publish"
                    plan = BatchPlan(
                        webhooks,
                        owners,
                        claim.new_ids,
                        claim.spooled_conversations,
                        broker_suspect=self.broker_suspect(),
                    )
                    direct = plan.direct()
                    plan.settle(
                        await self.publish(
                            [self.record(e, webhooks[owners[e.id]].traceparent) for e in direct]
                        )
                    )
                    if plan.spool:
                        stage = "spool"
                        await repo.spool_durably(
                            conn,
                            [
                                repo.SpoolRow(e.id, p, self.topic, e.subject, r.value)
                                for p, e in plan.spool
                                for r in (self.record(e),)
                            ],
                        )
                    stage = "commit"
            except DB_ERRORS as exc:
                if stage == "claim" and attempt == 1 and isinstance(exc, RETRYABLE):
                    log.info("gateway.batch_retry", error=type(exc).__name__)
                    continue
                log.warning("gateway.database_failed", stage=stage, error=type(exc).__name__)
                if plan is None:
                    claimed()
                    return await self._without_database(webhooks, owners)
                return plan.after_failed_commit()
            if plan.spool:
                self.spool_written.set()
            return plan.accepted()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _without_database(
        self, webhooks: Sequence[Webhook], owners: dict[str, int]
    ) -> list[Accepted | BaseException]:
        """PostgreSQL unavailable: publish without dedup; 200 only if all reached Kafka."""
        events = {e.id: e for w in webhooks for e in w.events}
        records = [self.record(e, webhooks[owners[e.id]].traceparent) for e in events.values()]
        ok = dict(zip(events, await self.publish(records), strict=True))
        results: list[Accepted | BaseException] = []
        for webhook in webhooks:
            if all(ok[e.id] for e in webhook.events):
                n = len(webhook.events)
                events_counter(webhook.platform, "undeduplicated").inc(n)
                results.append(Accepted(webhook.count, n, webhook.count - n, n, 0, False))
            else:
                results.append(NotDurable())
        return results


_PARTITIONER = DefaultPartitioner()


def _terminate(conn: asyncpg.Connection) -> None:
    """Drop a pooled connection at once, if it is still attached (asyncpg terminates one
    whose reset failed and detaches it: then there is nothing left to do)."""
    with contextlib.suppress(*DB_ERRORS):
        conn.terminate()


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool ``reset``: asyncpg still rolls back an open transaction on release; we skip its
    default reset query (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL), a round trip per
    batch. The gateway never leaves session state behind: ``SET LOCAL`` and
    ``pg_try_advisory_xact_lock`` only (transaction-scoped), no LISTEN, no cursors."""


@dataclass(slots=True)
class _PartitionBatch:
    topic: str
    partition: int
    builder: Any  # aiokafka BatchBuilder
    indices: list[int]

    def append(self, index: int, record: Record) -> bool:
        headers = (
            CE_HEADERS
            if record.traceparent is None
            else telemetry.kafka_headers(CE_HEADERS, record.traceparent)
        )
        metadata = self.builder.append(
            key=record.key, value=record.value, timestamp=None, headers=headers
        )
        if metadata is None:
            return False
        self.indices.append(index)
        return True


@dataclass(slots=True)
class Webhook:
    """One verified webhook waiting for its batch."""

    platform: str
    channel: ChannelWithSecrets
    events: list[normalizer.InboundEvent]
    """Distinct events, in the webhook's order."""
    count: int
    """Events in the webhook, repeats included."""
    body: bytes
    content_type: str | None
    headers: dict[str, str]
    traceparent: str | None = None
    """The webhook's trace context (its ``webhook.commit`` span, or the client's)."""


class BatchPlan:
    """What happens to each event of a claimed batch (pure: no I/O, unit-testable).

    A webhook *owns* the new ids it was the first of its batch to carry; an id not new was
    committed by an earlier transaction (``ON CONFLICT`` waits for the holder to finish).
    Per webhook, as for a lone webhook: events of a conversation with spooled events (or all
    events, while the broker is suspect) go to the spool; the others are published, and a
    failed publish sends that event and the webhook's later events of its conversation to
    the spool.
    """

    def __init__(
        self,
        webhooks: Sequence[Webhook],
        owners: dict[str, int],
        new_ids: frozenset[str],
        spooled_conversations: frozenset[str],
        *,
        broker_suspect: bool,
    ) -> None:
        self.webhooks = webhooks
        self.new: list[list[normalizer.InboundEvent]] = [
            [e for e in w.events if e.id in new_ids and owners[e.id] == index]
            for index, w in enumerate(webhooks)
        ]
        self.blocked: list[set[str]] = [
            {e.subject for e in new if broker_suspect or e.subject in spooled_conversations}
            for new in self.new
        ]
        self.published = [0] * len(webhooks)
        self.spooled = [0] * len(webhooks)
        self.spool: list[tuple[str, normalizer.InboundEvent]] = []
        """(platform, event) to write to the spool, in order."""
        self.spooled_ids: set[str] = set()

    def direct(self) -> list[normalizer.InboundEvent]:
        """The events to publish now, webhook after webhook."""
        return [
            e
            for new, blocked in zip(self.new, self.blocked, strict=True)
            for e in new
            if e.subject not in blocked
        ]

    def settle(self, ok: Sequence[bool]) -> None:
        """Record the publish outcome of ``direct()`` (same order)."""
        published = dict(zip((e.id for e in self.direct()), ok, strict=True))
        for index, (webhook, new) in enumerate(zip(self.webhooks, self.new, strict=True)):
            blocked = self.blocked[index]
            for event in new:
                if event.subject in blocked or not published.get(event.id, False):
                    blocked.add(event.subject)
                    self.spool.append((webhook.platform, event))
                    self.spooled_ids.add(event.id)
                    self.spooled[index] += 1
                else:
                    self.published[index] += 1

    def accepted(self) -> list[Accepted | BaseException]:
        """The batch committed: every webhook is durable."""
        results: list[Accepted | BaseException] = []
        for index, webhook in enumerate(self.webhooks):
            new = len(self.new[index])
            duplicates = webhook.count - new
            if self.spooled[index]:
                events_counter(webhook.platform, "spooled").inc(self.spooled[index])
            events_counter(webhook.platform, "published").inc(self.published[index])
            if duplicates:
                events_counter(webhook.platform, "duplicate").inc(duplicates)
            results.append(
                Accepted(webhook.count, new, duplicates, self.published[index], self.spooled[index])
            )
        return results

    def after_failed_commit(self) -> list[Accepted | BaseException]:
        """The spool write or COMMIT failed: no dedup, archive or spool row was kept.

        A webhook is still durable if none of its events was headed for the spool: each one
        was published (by it or a batch-mate, acks=all) or committed before this batch. Then
        200 without dedup (a redelivery publishes the same ids again); otherwise 503.
        """
        results: list[Accepted | BaseException] = []
        for index, webhook in enumerate(self.webhooks):
            if any(e.id in self.spooled_ids for e in webhook.events):
                results.append(NotDurable())
                continue
            published = self.published[index]
            events_counter(webhook.platform, "undeduplicated").inc(published)
            results.append(Accepted(webhook.count, published, 0, published, 0, False))
        return results


def received_now() -> datetime:
    return datetime.now(UTC)
