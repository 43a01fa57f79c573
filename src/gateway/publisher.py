"""Publishing to the broker: records grouped per partition, acks awaited within a deadline.

Never raises for broker trouble: ``publish`` returns per-record success, and a failure marks
the broker *suspect* for ``gateway_broker_backoff_seconds`` (the gateway then spools directly
instead of waiting for the broker on every request).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from infra import telemetry
from infra.kafka import CE_HEADERS
from infra.logging import get_logger

log = get_logger(__name__)

_PARTITIONER = DefaultPartitioner()


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes
    traceparent: str | None = None
    """Sent as the record's ``traceparent`` header (the webhook's trace; spooled with the event)."""


class Publisher:
    def __init__(self, producer: AIOKafkaProducer, *, timeout: float, backoff: float) -> None:
        self.producer = producer
        self.timeout = timeout
        self.backoff = backoff
        self.broker_down_until = 0.0
        self.unresolved_sends: set[asyncio.Future[Any]] = set()
        """Sends that timed out but may still reach the broker (then: a duplicate, same id)."""
        self._partition_cache: dict[tuple[bytes, int], int] = {}

    def broker_suspect(self) -> bool:
        return time.monotonic() < self.broker_down_until

    def broker_up(self) -> None:
        """The broker acknowledged (e.g. the relay's batch): stop spooling directly."""
        self.broker_down_until = 0.0

    async def publish(self, records: Sequence[Record]) -> list[bool]:
        """Send every record and wait for acks=all within the publish timeout.

        Records are grouped into one closed record batch per partition (``send_batch``), in
        their order: a closed batch is sent without waiting for ``linger_ms`` (our callers
        already batch), and costs less per record than ``send``. The partition is the
        producer's default for the key (murmur2), the same one ``send`` would pick.

        Returns per-record success. Never raises for broker trouble: a failure marks the
        broker suspect for the backoff.
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
        deadline = loop.time() + self.timeout
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
            self.broker_down_until = time.monotonic() + self.backoff
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
