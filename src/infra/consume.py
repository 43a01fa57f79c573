"""A supervised Kafka consume loop with manual offset commits, for any service.

``ConsumeLoop.run(stop)`` polls with ``getmany`` (at most ``batch_size`` records in flight),
hands each partition's records, in offset order, to ``handle`` (partitions run concurrently),
and commits, through the ``commit`` it was given, the offsets of the records ``handle`` says
it finished. A record that is not finished is not committed: its partition is rewound to it
(``seek``) and the loop backs off before polling again, so the caller's outcome must be
durable before ``handle`` counts the record. A crash before the commit redelivers the records;
handlers are expected to be idempotent.

If the consumer itself fails (start, poll, …) it is closed (uncommitted records go back to
whoever owns the partition next) and a new one, from ``make_consumer``, is started after a
back-off. ``stop`` wins over every wait on the broker: a start (bootstrap, topic metadata, the
group join, which a broker may never complete) still under way is abandoned
(``infra.aio``) and the consumer closed within ``abandon_grace``; a started consumer
finishes its batch, commits, and gets ``stop_grace`` to leave its group before its connections
are closed anyway.

Metrics: ``switchboard_kafka_consumer_lag{consumer}``, records behind the end of the log over
the partitions this process holds (highwater minus position once a poll's records are handled,
so a rewound partition counts its unfinished records; Prometheus sums the replicas). A partition
whose highwater is not known yet (nothing fetched) counts 0.

Where a handler produces records (a dead letter), a ``BatchOutput`` gives it the producer and
commits the loop's offsets: ``PlainOutput`` (a shared producer, each send acknowledged on its
own, then ``consumer.commit``: a crash in between sends again on redelivery) or
``TransactionalOutput`` (the batch's sends and its offsets commit in one Kafka transaction; a
failure aborts both and restarts the consumer, which fetches again from the committed offsets).

Log events carry ``consumer=<name>``: ``kafka.consumer_started``,
``kafka.consumer_start_abandoned``, ``kafka.consumer_failed``, ``kafka.consumer_stop_timed_out``,
``kafka.consumer_stop_failed``, ``kafka.commit_failed``, ``kafka.transaction_aborted``;
``per_record`` logs ``kafka.record_failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

from infra import telemetry
from infra.aio import abandon, first_of
from infra.logging import get_logger

__all__ = [
    "BatchOutput",
    "Commit",
    "ConsumeLoop",
    "PartitionHandler",
    "PlainOutput",
    "Record",
    "TransactionFailed",
    "TransactionalOutput",
    "commit_offsets",
    "consumer_options",
    "per_record",
    "process_span",
]

log = get_logger(__name__)

CONSUMER_LAG = Gauge(
    "switchboard_kafka_consumer_lag",
    "Records behind the end of the log, over the partitions this process consumes",
    ["consumer"],
)

Record: TypeAlias = Any
"""``aiokafka.ConsumerRecord[bytes, bytes]`` (aiokafka ships no type information)."""

PartitionHandler = Callable[[Sequence[Record]], Awaitable[int]]
"""Handles records of one partition in offset order; returns how many, from the first, are
finished (their outcome is durable). Fewer than all means: commit those, retry the rest."""

Commit = Callable[[AIOKafkaConsumer, dict[TopicPartition, int]], Awaitable[None]]
"""Commits ``{partition: next offset}`` for a consumer (``commit_offsets``, or a wrapper)."""


async def commit_offsets(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
    """The plain commit: ``consumer.commit(offsets)``."""
    await consumer.commit(offsets)


class BatchOutput(Protocol):
    """What a consume loop's handlers produce through, and how its offsets are committed."""

    async def producer(self) -> AIOKafkaProducer:
        """The producer for a record a handler publishes (started; in the batch's transaction
        for a transactional output)."""
        ...

    async def commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        """Commit the batch: ``{partition: next offset}`` (a ``Commit``)."""
        ...

    async def close(self) -> None:
        """Release what the output owns (not a shared producer)."""
        ...


@dataclass(frozen=True, slots=True)
class PlainOutput:
    """Sends through a shared producer, offsets by ``consumer.commit``: at-least-once, a crash
    between a handler's acknowledged send and the commit sends the record again."""

    shared: AIOKafkaProducer

    async def producer(self) -> AIOKafkaProducer:
        return self.shared

    async def commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        await consumer.commit(offsets)

    async def close(self) -> None:
        return None


class TransactionFailed(Exception):
    """A batch's transaction did not commit: its sends are aborted and its offsets not
    committed. Not a ``KafkaError`` on purpose: ``ConsumeLoop`` only logs a failed plain
    commit (the next one covers it), but an aborted batch must be consumed again, so the loop
    restarts its consumer, which fetches again from the committed offsets."""


class TransactionalOutput:
    """Sends and offsets of a batch in one Kafka transaction (a transactional producer of its
    own, ``send_offsets_to_transaction`` to ``group_id``): a read_committed reader sees a
    batch's records exactly when its offsets are committed.

    The transaction begins with the batch's first send (or at the commit of a batch that sent
    nothing). Every offset of the group goes through a transaction, never ``consumer.commit``:
    one commit path keeps the committed offsets in batch order (a plain commit and a pending
    transactional one of the same partition would race at the coordinator). Any failure (a
    send refused, a commit timed out, the producer fenced by a newer one with the same
    transactional id) aborts the transaction as far as the broker can still be told, drops the
    producer (the next one fences it and aborts whatever it left open) and raises
    ``TransactionFailed``.

    aiokafka sends transactional offsets without the consumer's generation (no KIP-447), so a
    consumer that lost its partitions in a rebalance it has not seen yet can still commit: the
    records it produced may then appear twice. Consumers deduplicate by CloudEvents id.
    """

    def __init__(
        self,
        *,
        make_producer: Callable[[], AIOKafkaProducer],
        group_id: str,
        name: str,
        timeout: float,
    ) -> None:
        self._make_producer = make_producer
        self._group_id = group_id
        self._name = name
        self._timeout = timeout
        self._producer: AIOKafkaProducer | None = None
        self._in_transaction = False
        self._lock = asyncio.Lock()  # partitions are handled concurrently: one begin

    async def producer(self) -> AIOKafkaProducer:
        async with self._lock:
            return await self._begin()

    async def commit(self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        async with self._lock:
            try:
                producer = await self._begin()
                async with asyncio.timeout(self._timeout):
                    await producer.send_offsets_to_transaction(offsets, self._group_id)
                    await producer.commit_transaction()
                self._in_transaction = False
            except Exception as exc:
                log.warning(
                    "kafka.transaction_aborted", consumer=self._name, error=type(exc).__name__
                )
                await self._drop()
                raise TransactionFailed(type(exc).__name__) from exc

    async def close(self) -> None:
        async with self._lock:
            await self._drop()

    async def _begin(self) -> AIOKafkaProducer:
        if self._producer is None:
            producer = self._make_producer()
            try:
                async with asyncio.timeout(self._timeout):
                    await producer.start()
            except BaseException:
                await self._stop(producer)
                raise
            self._producer = producer
        if not self._in_transaction:
            async with asyncio.timeout(self._timeout):
                await self._producer.begin_transaction()
            self._in_transaction = True
        return self._producer

    async def _drop(self) -> None:
        """Abort the open transaction (if the broker answers in time) and stop the producer."""
        producer, self._producer = self._producer, None
        in_transaction, self._in_transaction = self._in_transaction, False
        if producer is None:
            return
        if in_transaction:
            with contextlib.suppress(Exception):  # fenced, broker away: the next producer aborts
                async with asyncio.timeout(self._timeout):
                    await producer.abort_transaction()
        await self._stop(producer)

    async def _stop(self, producer: AIOKafkaProducer) -> None:
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self._timeout):
                await producer.stop()


def consumer_options(*, batch_size: int, session_timeout_ms: int) -> dict[str, object]:
    """aiokafka options matching a loop's ``batch_size``: the poll bound, and a session timeout
    (how long a dead process keeps its partitions) with heartbeats at a third of it."""
    return {
        "max_poll_records": batch_size,
        "session_timeout_ms": session_timeout_ms,
        "heartbeat_interval_ms": max(session_timeout_ms // 3, 300),
    }


def process_span(
    records: Sequence[Record], *, group: str | None = None
) -> contextlib.AbstractContextManager[object]:
    """A CONSUMER ``process <topic>`` span (OpenTelemetry messaging conventions) around the
    handling of ``records`` (one partition's, in order). One record: the span continues the
    trace of its ``traceparent`` header (carried while tracing is off); several: the span
    links to each record's trace. Nothing is made when tracing is off and no record has a
    ``traceparent``."""
    first = records[0]
    if len(records) == 1:
        return telemetry.span(
            f"process {first.topic}",
            kind=telemetry.SpanKind.CONSUMER,
            parent=telemetry.from_kafka(first.headers),
            attributes=telemetry.consumer_attributes(first, group=group)
            if telemetry.enabled()
            else None,
        )
    if not telemetry.enabled():
        return contextlib.nullcontext()
    attributes = telemetry.consumer_attributes(first, group=group)
    attributes["messaging.batch.message_count"] = len(records)
    return telemetry.span(
        f"process {first.topic}",
        kind=telemetry.SpanKind.CONSUMER,
        attributes=attributes,
        links=[telemetry.link(telemetry.from_kafka(r.headers)) for r in records],
    )


def per_record(
    handle: Callable[[Record], Awaitable[None]], *, group: str | None = None
) -> PartitionHandler:
    """A partition handler that handles records one at a time, stopping at the first that
    raises (logged, retried later with the rest of its partition). Each record is handled in
    its ``process_span``."""

    async def handle_partition(records: Sequence[Record]) -> int:
        done = 0
        for index, record in enumerate(records):
            try:
                with process_span(records[index : index + 1], group=group):
                    await handle(record)
            except Exception as exc:
                log.warning(
                    "kafka.record_failed",
                    error=type(exc).__name__,
                    topic=record.topic,
                    partition=record.partition,
                    offset=record.offset,
                )
                return done
            done += 1
        return done

    return handle_partition


@dataclass(frozen=True, kw_only=True, slots=True)
class ConsumeLoop:
    """One supervised consumer: see the module docstring. Durations are in seconds."""

    name: str
    make_consumer: Callable[[], AIOKafkaConsumer]
    handle: PartitionHandler
    commit: Commit
    batch_size: int
    poll_ms: int = 500
    stop_grace: float = 5.0
    """How long a started consumer gets to stop (leave its group) once ``stop`` is set: a
    broker that never answers must not keep the process up."""
    abandon_grace: float = 0.5
    """How long a start abandoned for ``stop`` gets to unwind and close (it holds no
    partitions)."""
    retry_backoff: tuple[float, float] = (0.2, 10.0)
    """First and largest wait before polling again after a partition did not finish."""
    restart_backoff: tuple[float, float] = (0.5, 30.0)
    """First and largest wait before starting a new consumer after one failed."""

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set (then finish the batch, commit, close)."""
        backoff = self.restart_backoff[0]
        while not stop.is_set():
            consumer = self.make_consumer()
            started = False
            try:
                started = await self._start(consumer, stop)
                if not started:
                    log.info("kafka.consumer_start_abandoned", consumer=self.name)
                    break
                log.info("kafka.consumer_started", consumer=self.name)
                await self._consume(consumer, stop)
                backoff = self.restart_backoff[0]
            except Exception as exc:
                log.error("kafka.consumer_failed", consumer=self.name, error=repr(exc))
            finally:  # a consumer that never joined has no partitions to hand over: no grace
                await self._close(consumer, self.stop_grace if started else self.abandon_grace)
            if not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, self.restart_backoff[1])

    async def _consume(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
        backoff = self.retry_backoff[0]
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=self.poll_ms, max_records=self.batch_size)
            if not batch:
                await self._record_lag(consumer)
                continue
            partitions = list(batch.items())
            handled = await asyncio.gather(*(self.handle(records) for _, records in partitions))
            offsets: dict[TopicPartition, int] = {}
            stalled = False
            for (tp, records), count in zip(partitions, handled, strict=True):
                if count:
                    offsets[tp] = records[count - 1].offset + 1
                if count < len(records):
                    consumer.seek(tp, records[count].offset)
                    stalled = True
            if offsets:
                try:
                    await self.commit(consumer, offsets)
                except KafkaError as exc:  # e.g. a rebalance: the records come back
                    log.warning("kafka.commit_failed", consumer=self.name, error=type(exc).__name__)
            await self._record_lag(consumer)
            if stalled:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, self.retry_backoff[1])
            else:
                backoff = self.retry_backoff[0]

    async def _record_lag(self, consumer: AIOKafkaConsumer) -> None:
        """Set the lag gauge; a metric never disturbs consumption (any failure: left as is)."""
        try:
            lag = 0
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is None:
                    continue
                position = await asyncio.wait_for(consumer.position(tp), 0.1)
                lag += max(highwater - position, 0)
        except Exception:  # unassigned by a rebalance, position unknown, ...
            return
        CONSUMER_LAG.labels(self.name).set(lag)

    async def _start(self, consumer: AIOKafkaConsumer, stop: asyncio.Event) -> bool:
        """Start ``consumer`` (bootstrap, topic metadata, group join) unless ``stop`` comes
        first.

        ``consumer.start()`` waits for the group join without any bound of its own (a join the
        coordinator never completes keeps it waiting forever), so it runs as a task raced
        against ``stop``: True once started, False if ``stop`` won (the start is cancelled; the
        caller still closes the consumer). A failed start raises."""
        starting = asyncio.ensure_future(consumer.start())
        try:
            await first_of(starting, stop)
        except BaseException:
            abandon(starting)
            raise
        if not starting.done():
            starting.cancel()  # a cancelled start unwinds at once; bounded all the same
            await asyncio.wait({starting}, timeout=self.abandon_grace)
            if not starting.done():
                abandon(starting)
                return False
        if starting.cancelled():
            return False
        starting.result()
        return True

    async def _close(self, consumer: AIOKafkaConsumer, grace: float) -> None:
        """Stop ``consumer`` within ``grace``. ``consumer.stop()`` first waits for the group
        coordinator's task, which may be stuck in a join the broker never answers; past the
        bound that wait is cancelled and the connections are closed directly."""
        try:
            async with asyncio.timeout(grace):
                await consumer.stop()
            return
        except TimeoutError:
            log.warning("kafka.consumer_stop_timed_out", consumer=self.name, timeout=grace)
        except Exception as exc:
            log.warning("kafka.consumer_stop_failed", consumer=self.name, error=repr(exc))
        # ``stop()`` was cut short before closing the client (aiokafka has no public way left):
        # close its connections so an abandoned consumer does not keep sockets open.
        client = getattr(consumer, "_client", None)
        if client is not None:
            with contextlib.suppress(Exception, TimeoutError):
                async with asyncio.timeout(grace):
                    await client.close()
