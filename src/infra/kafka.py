"""Kafka producer/consumer/admin factories with Switchboard's defaults.

Producers use ``acks=all``; idempotence is on unless the broker cannot do it (the embedded Tansu
broker cannot, so ``switchboard dev`` turns it off there; on ``--broker kafka`` it stays on).
Topics get ``kafka_replication_factor`` and, when set, ``kafka_min_insync_replicas``.
Consumers never auto-commit: offsets are committed by the caller once the outcome of a record
is stored.

A producer's ``stop`` has a deadline (``kafka_stop_timeout_seconds``, plus at most 2 s to
close its sockets; issue 9 D16):
aiokafka's own waits for every record to be acknowledged, up to the request timeout and its
retries (a stalled broker held ``switchboard serve`` 27 s after SIGTERM). Records still
unacknowledged then fail; their owners keep them elsewhere (the gateway's spool, the outbox
rows) and the next process publishes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import socket
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaTimeoutError, TopicAlreadyExistsError

from infra.idempotence import SequenceGuard
from infra.logging import get_logger
from infra.settings import TOPICS, Settings

log = get_logger(__name__)

CLOUDEVENTS_CONTENT_TYPE = b"application/cloudevents+json"
CE_HEADERS = [("content-type", CLOUDEVENTS_CONTENT_TYPE)]

COMPONENT_TOPICS = ("conversations.v1",)
"""Topics of the second-wave components (docs/contracts.md §7), created with the contract topics."""


_ABANDON_STEP = 1.0
"""Seconds for each local step of an abandoned stop (closing sockets, ending the sender)."""


class Producer(AIOKafkaProducer):  # type: ignore[misc]
    """``AIOKafkaProducer`` whose ``stop`` gives up on the broker after ``stop_timeout``."""

    def __init__(self, *, stop_timeout: float, **options: Any) -> None:
        super().__init__(**options)
        self.stop_timeout = stop_timeout
        self.sequence_guard = SequenceGuard(self)

    async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await super().send(*args, **kwargs)
        self.sequence_guard.watch(future)
        return future

    async def send_batch(self, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        future: asyncio.Future[Any] = await super().send_batch(*args, **kwargs)
        self.sequence_guard.watch(future)
        return future

    async def stop(self) -> None:
        try:
            await asyncio.wait_for(self.flush(), self.stop_timeout)
        except TimeoutError:
            log.warning("kafka.producer_stop_abandoned", timeout_s=self.stop_timeout)
            await self._abandon()
            return
        try:
            await asyncio.wait_for(super().stop(), self.stop_timeout)
        except TimeoutError:
            log.warning("kafka.producer_close_abandoned", timeout_s=self.stop_timeout)

    async def _abandon(self) -> None:
        """What ``AIOKafkaProducer.stop`` does, without waiting for the broker: fail the
        unacknowledged records, stop the sender, close the connections (which fails the
        requests in flight the sender waits for), each within the deadline."""
        self._closed = True
        self._message_accumulator.fail_all(
            KafkaTimeoutError("the producer stopped before the broker acknowledged")
        )
        sender = self._sender.sender_task if self._sender is not None else None
        if sender is not None:
            sender.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.close(), _ABANDON_STEP)
        if sender is not None:
            await asyncio.wait([sender], timeout=_ABANDON_STEP)
            if sender.done() and not sender.cancelled():
                sender.exception()  # retrieved: a request failed by the close is expected


def create_producer(settings: Settings, *, transactional_id: str | None = None) -> Producer:
    """The producer with Switchboard's defaults; a ``transactional_id`` makes it transactional
    (which implies idempotence)."""
    return Producer(
        stop_timeout=settings.kafka_stop_timeout_seconds,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=settings.kafka_client_id,
        acks="all",
        enable_idempotence=settings.kafka_enable_idempotence or transactional_id is not None,
        linger_ms=settings.kafka_linger_ms,
        max_batch_size=settings.kafka_max_batch_size,
        request_timeout_ms=settings.kafka_request_timeout_ms,
        transactional_id=transactional_id,
    )


_TRANSACTIONAL_IDS = itertools.count()


def transactional_id(settings: Settings, group_id: str) -> str:
    """A transactional id for one consumer of ``group_id`` in this process: the client id,
    the group, the host and the process, and a counter (two consumers of one group in one
    process must not fence each other). A producer re-created by the same consumer keeps it,
    so the new one fences the old and aborts its open transaction at once; a transaction left
    open by a process that died is aborted by the broker after ``transaction_timeout_ms``."""
    return (
        f"{settings.kafka_client_id}.{group_id}.{socket.gethostname()}.{os.getpid()}"
        f".{next(_TRANSACTIONAL_IDS)}"
    )


def create_consumer(
    settings: Settings, *topics: str, group_id: str | None = None, **overrides: object
) -> AIOKafkaConsumer:
    options: dict[str, object] = {
        "bootstrap_servers": settings.kafka_bootstrap_servers,
        "client_id": settings.kafka_client_id,
        "group_id": group_id or settings.kafka_consumer_group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    options.update(overrides)
    return AIOKafkaConsumer(*topics, **options)


async def ensure_topics(settings: Settings, names: Iterable[str] | None = None) -> list[str]:
    """Create the contract topics that are missing; return the ones created."""
    wanted = (
        list(names)
        if names is not None
        else [settings.topic(t) for t in (*TOPICS, *COMPONENT_TOPICS)]
    )
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}-admin",
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in wanted if t not in existing]
        if not missing:
            return []
        await _create(settings, admin, missing)
        log.info("kafka.topics_created", topics=missing)
        return missing
    finally:
        await admin.close()


async def missing_topics(
    settings: Settings, names: Iterable[str], *, create: bool = False
) -> list[str]:
    """Return those of ``names`` the broker does not have with partitions.

    A broker restarted without its storage (the embedded one keeps topics in memory; a Kafka
    node whose data directory was wiped) answers without the topics, yet may acknowledge writes
    to them that it never stores (issue 10 item 6): whoever deletes its own copy of records on
    an ack checks here first. With ``create``, missing topics are created and checked again
    (a topic Kafka has just created may take a moment to appear: it is then still missing).
    The metadata is read for every topic (no topic named in the request: that would let a
    broker auto-create it with its own defaults). Raises on broker trouble.
    """
    wanted = list(names)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}-admin",
        request_timeout_ms=settings.kafka_request_timeout_ms,
    )
    await admin.start()
    try:
        missing = await _without_partitions(admin, wanted)
        if missing and create:
            await _create(settings, admin, missing)
            log.warning("kafka.topics_recreated", topics=missing)
            missing = await _without_partitions(admin, wanted)
        return missing
    finally:
        await admin.close()


async def _without_partitions(admin: AIOKafkaAdminClient, names: list[str]) -> list[str]:
    described = {t["topic"]: t for t in await admin.describe_topics()}
    missing = []
    for name in names:
        topic = described.get(name)
        if topic is None or topic["error_code"] != 0 or not topic["partitions"]:
            missing.append(name)
    return missing


async def _create(settings: Settings, admin: AIOKafkaAdminClient, names: list[str]) -> None:
    with contextlib.suppress(TopicAlreadyExistsError):
        await admin.create_topics(
            [
                NewTopic(
                    name=t,
                    num_partitions=settings.kafka_topic_partitions,
                    replication_factor=settings.kafka_replication_factor,
                    topic_configs=_topic_configs(settings),
                )
                for t in names
            ]
        )


def _topic_configs(settings: Settings) -> dict[str, str]:
    if settings.kafka_min_insync_replicas is None:
        return {}
    return {"min.insync.replicas": str(settings.kafka_min_insync_replicas)}


async def connect(settings: Settings, producer: AIOKafkaProducer) -> None:
    """Create the missing contract topics (when configured to) and start ``producer``."""
    if settings.kafka_create_topics:
        await ensure_topics(settings)
    await producer.start()


async def keep_connecting(
    settings: Settings,
    producer: AIOKafkaProducer,
    *,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> None:
    """Retry ``connect`` with exponential back-off until it succeeds (or is cancelled).

    An ``AIOKafkaProducer`` whose ``start`` failed can be started again; records sent to it
    meanwhile wait for metadata until their timeout, so callers' own timeouts apply.
    """
    delay = first_delay
    while True:
        await asyncio.sleep(delay)
        try:
            await connect(settings, producer)
        except Exception as exc:
            delay = min(delay * 2, max_delay)
            log.warning("kafka.still_unavailable", error=type(exc).__name__, retry_in=delay)
        else:
            log.info("kafka.connected")
            return


async def ping(settings: Settings) -> None:
    """Raise unless the broker answers a metadata request within a few seconds."""
    timeout = 3.0
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.kafka_client_id}-health",
        request_timeout_ms=int(timeout * 1000),
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(admin.list_topics(), timeout)
    finally:
        await admin.close()
