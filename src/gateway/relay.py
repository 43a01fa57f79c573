"""Background tasks of the gateway: the spool relay and the retention purger.

Relay
-----
Publishes ``gateway_spool`` rows in ``seq`` order (the order they were accepted), each with
its webhook's ``traceparent`` header as the direct publish would have sent it, in batches
of ``gateway_relay_batch_size``, and deletes them in the same transaction once the broker has
acknowledged every record of the batch, and only if the broker has the batch's topics with
partitions both before the publish (missing ones are re-created, as at start-up) and after
it: a broker restarted without its topics acknowledges writes it never stores (issue 10
item 6). Any failure rolls the batch back whole (records that
did reach the broker are published again later, with the same ids: at-least-once).

Several gateway replicas may run: the relay takes a transaction-scoped advisory lock
(``pg_try_advisory_xact_lock``), so exactly one relay drains the spool at a time and the global
``seq`` order is kept (``FOR UPDATE SKIP LOCKED`` would let two replicas publish interleaved
batches of one conversation out of order). The others skip the round and try again.

It wakes when this process spools something, and polls every
``gateway_relay_interval_seconds`` for rows spooled by other replicas.

The relay also samples ``switchboard_gateway_spool_depth`` (a bounded ``count``) every
``gateway_spool_sample_interval_seconds``, on every replica, lock or not.

Purger
------
Every ``gateway_purge_interval_seconds``: deletes dedup rows older than
``gateway_dedup_window_days`` (default 8, at least 7: Meta retries for up to 7 days) and
archived webhooks older than ``gateway_archive_retention_days`` (default 7), in batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from gateway import repository as repo
from gateway.metrics import EVENTS, SPOOL_DEPTH, SPOOL_DEPTH_CAP
from gateway.publisher import Record
from gateway.service import Gateway
from infra import kafka
from infra.dberrors import DATABASE_ERRORS
from infra.logging import get_logger

log = get_logger(__name__)


class BrokerUnacknowledged(Exception):
    """The broker did not acknowledge every record of a spooled batch (rolled back whole)."""


_RELAY_ERRORS: tuple[type[BaseException], ...] = (*DATABASE_ERRORS, BrokerUnacknowledged)


async def relay_once(gateway: Gateway) -> int:
    """Publish one batch of the spool; return how many records were relayed (0: none/locked)."""
    settings = gateway.settings
    acquire = gateway.pool.acquire(timeout=settings.gateway_db_timeout_seconds)
    async with acquire as conn, conn.transaction():
        if not await repo.try_relay_lock(conn):
            return 0
        rows = await repo.oldest_spooled(conn, settings.gateway_relay_batch_size)
        if not rows:
            if gateway.publisher.broker_suspect():
                await _check_topics(gateway, [gateway.topic], create=True)
            gateway.publisher.broker_up()
            return 0
        topics = sorted({r["topic"] for r in rows})
        await _check_topics(gateway, topics, create=True)
        results = await gateway.publish(
            [
                Record(
                    r["topic"], r["conversation_id"].encode(), bytes(r["value"]), r["traceparent"]
                )
                for r in rows
            ]
        )
        if not all(results):
            raise BrokerUnacknowledged
        # The acks count only if the broker still has the topics now (it may have restarted
        # without them since the first check): never re-create here, that would hide it.
        await _check_topics(gateway, topics, create=False)
        await repo.delete_spooled(conn, [r["seq"] for r in rows])
    gateway.publisher.broker_up()
    for platform, count in Counter(r["platform"] for r in rows).items():
        EVENTS.labels(platform, "relayed").inc(count)
    log.info("gateway.relayed", count=len(rows))
    return len(rows)


async def _check_topics(gateway: Gateway, topics: list[str], *, create: bool) -> None:
    """Raise ``BrokerUnacknowledged`` unless the broker has ``topics`` with partitions.

    Issue 10 item 6: a broker restarted without its topics acknowledged the relay's records
    and stored nothing; the relay had deleted its spool. Missing topics are re-created when
    the process may create topics (``kafka_create_topics``, as at start-up).
    """
    settings = gateway.settings
    try:
        async with asyncio.timeout(2 * settings.kafka_request_timeout_ms / 1000):
            missing = await kafka.missing_topics(
                settings, topics, create=create and settings.kafka_create_topics
            )
    except Exception as exc:  # KafkaError, TimeoutError, connection refused, …
        log.warning("gateway.topic_check_failed", error=type(exc).__name__)
        raise BrokerUnacknowledged from exc
    if missing:
        log.warning("gateway.topics_missing", topics=missing)
        raise BrokerUnacknowledged


async def sample_spool_depth(gateway: Gateway) -> int:
    """Set ``switchboard_gateway_spool_depth`` from a count bounded by ``SPOOL_DEPTH_CAP``."""
    acquire = gateway.pool.acquire(timeout=gateway.settings.gateway_db_timeout_seconds)
    async with acquire as conn:
        depth = int(
            await conn.fetchval(
                "SELECT count(*) FROM (SELECT 1 FROM gateway_spool LIMIT $1) AS s", SPOOL_DEPTH_CAP
            )
        )
    SPOOL_DEPTH.set(depth)
    return depth


async def run_relay(gateway: Gateway, stop: asyncio.Event) -> None:
    settings = gateway.settings
    sampled_at = float("-inf")
    while not stop.is_set():
        if time.monotonic() - sampled_at >= settings.gateway_spool_sample_interval_seconds:
            sampled_at = time.monotonic()
            with contextlib.suppress(Exception):  # the relay reports a database outage itself
                await sample_spool_depth(gateway)
        relayed = 0
        gateway.spool_written.clear()  # a spool write during this round wakes the next one
        try:
            relayed = await relay_once(gateway)
        except _RELAY_ERRORS as exc:
            log.warning("gateway.relay_failed", error=type(exc).__name__)
        if relayed == settings.gateway_relay_batch_size:
            continue  # more waiting
        wake = asyncio.ensure_future(gateway.spool_written.wait())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait(
                [wake, stopping],
                timeout=settings.gateway_relay_interval_seconds if relayed == 0 else 0,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            wake.cancel()
            stopping.cancel()


async def purge_once(gateway: Gateway, now: datetime | None = None) -> dict[str, int]:
    settings = gateway.settings
    now = now or datetime.now(UTC)
    async with gateway.pool.acquire(timeout=settings.gateway_db_timeout_seconds) as conn:
        dedup = await repo.purge(
            conn,
            "gateway_dedup",
            "seen_at",
            now - timedelta(days=settings.gateway_dedup_window_days),
        )
        archive = await repo.purge(
            conn,
            "gateway_archive",
            "received_at",
            now - timedelta(days=settings.gateway_archive_retention_days),
        )
    if dedup or archive:
        log.info("gateway.purged", dedup=dedup, archive=archive)
    return {"dedup": dedup, "archive": archive}


async def run_purger(gateway: Gateway, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            await purge_once(gateway)
        except DATABASE_ERRORS as exc:
            log.warning("gateway.purge_failed", error=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), gateway.settings.gateway_purge_interval_seconds)
