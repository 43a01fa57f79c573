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
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime

import asyncpg  # type: ignore[import-untyped]

import normalizer
from channels.service import ChannelWithSecrets, load_with_secrets
from gateway import repository as repo
from gateway.batcher import GroupCommit
from gateway.batchplan import Accepted, BatchPlan, Webhook
from gateway.budget import BodyBudget
from gateway.cache import ChannelCache
from gateway.errors import NotDurable
from gateway.metrics import BATCH_SIZE, events_counter
from gateway.pool import open_pool, terminate
from gateway.publisher import Publisher, Record
from infra import telemetry
from infra.dberrors import DATABASE_ERRORS, is_retryable, kind_name
from infra.logging import get_logger
from infra.resources import Resources

log = get_logger(__name__)


class Gateway:
    """The long-lived state of the ingress in one process: DB pool, channel cache, publisher."""

    def __init__(self, resources: Resources, pool: asyncpg.Pool) -> None:
        self.resources = resources
        self.settings = resources.settings
        self.pool = pool
        self.topic = self.settings.topic("inbound.v1")
        self.publisher = Publisher(
            resources.producer,
            timeout=self.settings.gateway_publish_timeout_seconds,
            backoff=self.settings.gateway_broker_backoff_seconds,
        )
        self.channels = ChannelCache(
            self._load_channel,
            self.settings.gateway_channel_cache_ttl_seconds,
            self.settings.gateway_db_timeout_seconds,
            stale=self.settings.gateway_channel_stale_seconds,
        )
        self.claim_timeout = (
            self.settings.gateway_db_timeout_seconds + self.settings.gateway_publish_timeout_seconds
        )
        """The claim may wait for a concurrent batch holding the same ids through its publish;
        every other statement has the pool's command timeout, the database timeout."""
        self.bodies = BodyBudget(self.settings.webhook_max_inflight_body_bytes)
        """Webhook body bytes held by this process (``gateway.budget``)."""
        self.spool_written = asyncio.Event()
        """Set when this process spooled something: wakes the relay."""
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
        async with open_pool(resources.settings) as pool:
            gateway = cls(resources, pool)
            try:
                yield gateway
            finally:
                await gateway.batcher.close()

    async def channel(self, channel_id: uuid.UUID) -> ChannelWithSecrets | None:
        return await self.channels.get(channel_id)

    async def _load_channel(self, channel_id: uuid.UUID) -> ChannelWithSecrets | None:
        async with self.resources.sessionmaker() as session:
            return await load_with_secrets(session, self.resources.secret_box, channel_id)

    async def publish(self, records: Sequence[Record]) -> list[bool]:
        return await self.publisher.publish(records)

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
        except DATABASE_ERRORS as exc:
            log.warning(
                "gateway.database_unavailable", error=type(exc).__name__, kind=kind_name(exc)
            )
            claimed()
            return await self._without_database(webhooks, owners)
        try:
            return await self._batch_in_transaction(conn, webhooks, owners, claimed)
        finally:
            try:
                await acquire.__aexit__(None, None, None)
            except DATABASE_ERRORS as exc:
                # The batch's outcome is settled (published, committed or not): a stalled
                # connection that cannot be reset must not turn it into a 500.
                log.warning("gateway.release_failed", error=type(exc).__name__)
                terminate(conn)

    async def _batch_in_transaction(
        self,
        conn: asyncpg.Connection,
        webhooks: Sequence[Webhook],
        owners: dict[str, int],
        claimed: Callable[[], None],
    ) -> list[Accepted | BaseException]:
        archive = [
            repo.archive_row(
                channel_id=w.channel.id,
                platform=w.platform,
                account_id=w.channel.account_id,
                content_type=w.content_type,
                headers=w.headers,
                body=w.body,
                event_count=len(w.events),
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
                        conn,
                        owners=owners,
                        archive=archive,
                        conversations=conversations,
                        wait_s=self.claim_timeout,
                    )
                    claimed()
                    stage = "publish"
                    plan = BatchPlan(
                        webhooks,
                        owners,
                        claim.new_ids,
                        claim.spooled_conversations,
                        broker_suspect=self.publisher.broker_suspect(),
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
                                repo.SpoolRow(
                                    e.id,
                                    p,
                                    self.topic,
                                    e.subject,
                                    r.value,
                                    webhooks[owners[e.id]].traceparent,
                                )
                                for p, e in plan.spool
                                for r in (self.record(e),)
                            ],
                        )
                    stage = "commit"
            except DATABASE_ERRORS as exc:
                if stage == "claim" and attempt == 1 and is_retryable(exc):
                    log.info("gateway.batch_retry", error=type(exc).__name__)
                    continue
                log.warning(
                    "gateway.database_failed",
                    stage=stage,
                    error=type(exc).__name__,
                    kind=kind_name(exc),
                )
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
        ok = dict(
            zip(
                events,
                await self.publish(
                    [self.record(e, webhooks[owners[e.id]].traceparent) for e in events.values()]
                ),
                strict=True,
            )
        )
        results: list[Accepted | BaseException] = []
        for webhook in webhooks:
            if all(ok[e.id] for e in webhook.events):
                n = len(webhook.events)
                events_counter(webhook.platform, "undeduplicated").inc(n)
                results.append(Accepted(webhook.count, n, webhook.count - n, n, 0, False))
            else:
                results.append(NotDurable())
        return results


class GatewayHolder:
    """Where an app's running gateway is found (by the fast path and the routes): set by the
    gateway component's lifespan, ``None`` before it started and after it stopped."""

    __slots__ = ("gateway",)

    def __init__(self) -> None:
        self.gateway: Gateway | None = None


def received_now() -> datetime:
    return datetime.now(UTC)
