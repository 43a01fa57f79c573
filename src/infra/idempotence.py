"""Recovery of aiokafka's idempotent producer from a sequence gap (issue 10 item 4).

aiokafka (0.14) numbers each partition's batches when it takes them from its accumulator, and
it also takes a batch out to fail it when the partition has had no leader for longer than
``request_timeout_ms`` (every broker down). That batch's sequence numbers are spent but never
written, so once the brokers return every later batch of the partition is refused with
``OUT_OF_ORDER_SEQUENCE_NUMBER``, which is not retriable: the producer can never write to that
partition again. Measured: all three brokers of a cluster stopped for ~40 s, the gateway's
spool relay failed every round after they returned (incoming sequence 3741, broker at 4).

The Java client bumps its producer epoch in that case. aiokafka does not, so ``SequenceGuard``
does the equivalent: when a send fails with ``OutOfOrderSequenceNumber`` or
``UnknownProducerId``, the producer forgets its producer id and sequence numbers, and its
sender fetches a new producer id before the next batch (InitProducerId). Records of the failed
sends were not written; their callers (the spool relay, the lifecycle relay) send them again.
Only a failure of a send made since the last reset resets: batches still carrying the old
producer id fail the same way once each, and must not reset the new one.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import OutOfOrderSequenceNumber, UnknownProducerId
from aiokafka.producer.transaction_manager import (
    NO_PRODUCER_EPOCH,
    NO_PRODUCER_ID,
    PidAndEpoch,
)

from infra.logging import get_logger

log = get_logger(__name__)

SEQUENCE_ERRORS: tuple[type[Exception], ...] = (OutOfOrderSequenceNumber, UnknownProducerId)


class SequenceGuard:
    """Watches the futures of one idempotent producer's sends; resets it after a sequence gap."""

    def __init__(self, producer: Any) -> None:
        self._producer = producer
        self.generation = 0
        self.resets = 0

    def watch(self, future: asyncio.Future[Any]) -> None:
        generation = self.generation
        future.add_done_callback(lambda done: self._settled(done, generation))

    def _settled(self, future: asyncio.Future[Any], generation: int) -> None:
        if future.cancelled() or generation != self.generation:
            return
        error = future.exception()
        if isinstance(error, SEQUENCE_ERRORS):
            self.reset(type(error).__name__)

    def reset(self, reason: str) -> None:
        manager = getattr(self._producer, "_txn_manager", None)
        if manager is None or manager.transactional_id is not None or not manager.has_pid():
            return  # not idempotent; transactions abort instead; a new id is already coming
        manager._pid_and_epoch = PidAndEpoch(NO_PRODUCER_ID, NO_PRODUCER_EPOCH)
        manager._pid_waiter = asyncio.get_running_loop().create_future()
        manager._sequence_numbers.clear()
        self.generation += 1
        self.resets += 1
        log.warning("kafka.producer_id_reset", reason=reason, resets=self.resets)
