"""Batch outputs of the consume loop: the transactional one with an in-memory transactional
producer (aiokafka's ``begin/send_offsets/commit/abort`` surface), and the loop consuming an
aborted batch again. The real broker is in tests/integration/outbox/test_deadletter_txn.py."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError, KafkaTimeoutError, ProducerFenced

from infra.consume import (
    ConsumeLoop,
    PlainOutput,
    Record,
    TransactionalOutput,
    TransactionFailed,
)
from tests.unit.test_consume import FakeConsumer, records, stopped, until

P0 = TopicPartition("t", 0)
P1 = TopicPartition("t", 1)


@dataclass
class FakeTxnProducer:
    """Records the transaction calls; ``commit_error`` fails ``commit_transaction`` once."""

    calls: list[str] = field(default_factory=list)
    offsets: list[tuple[dict[TopicPartition, int], str]] = field(default_factory=list)
    commit_error: Exception | None = None
    in_transaction: bool = False

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def begin_transaction(self) -> None:
        await asyncio.sleep(0)  # waits for the producer id: concurrent callers interleave here
        assert not self.in_transaction, "a transaction was begun twice"
        self.in_transaction = True
        self.calls.append("begin")

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        assert self.in_transaction
        self.offsets.append((dict(offsets), group_id))
        self.calls.append("offsets")

    async def commit_transaction(self) -> None:
        if self.commit_error is not None:
            error, self.commit_error = self.commit_error, None
            raise error
        self.in_transaction = False
        self.calls.append("commit")

    async def abort_transaction(self) -> None:
        self.in_transaction = False
        self.calls.append("abort")


class Factory:
    def __init__(self, *producers: FakeTxnProducer) -> None:
        self.producers = list(producers)
        self.made: list[FakeTxnProducer] = []

    def __call__(self) -> AIOKafkaProducer:
        self.made.append(self.producers[len(self.made)])
        return cast(AIOKafkaProducer, self.made[-1])


def output(factory: Factory) -> TransactionalOutput:
    return TransactionalOutput(make_producer=factory, group_id="g", name="test", timeout=5.0)


def no_consumer() -> AIOKafkaConsumer:
    return cast(AIOKafkaConsumer, object())


async def test_a_batch_sends_and_commits_its_offsets_in_one_transaction() -> None:
    factory = Factory(FakeTxnProducer())
    out = output(factory)
    first, second = await asyncio.gather(out.producer(), out.producer())  # two partitions
    assert first is second is factory.made[0]
    await out.commit(no_consumer(), {P0: 3, P1: 1})
    await out.producer()  # the next batch: a new transaction on the same producer
    await out.commit(no_consumer(), {P0: 4})
    await out.close()

    producer = factory.made[0]
    assert producer.calls == [
        *("start", "begin", "offsets", "commit"),
        *("begin", "offsets", "commit", "stop"),
    ]
    assert producer.offsets == [({P0: 3, P1: 1}, "g"), ({P0: 4}, "g")]
    assert len(factory.made) == 1


async def test_a_batch_without_sends_commits_its_offsets_through_a_transaction() -> None:
    factory = Factory(FakeTxnProducer())
    out = output(factory)
    await out.commit(no_consumer(), {P0: 1})
    assert factory.made[0].calls == ["start", "begin", "offsets", "commit"]


@pytest.mark.parametrize(
    "error", [KafkaTimeoutError(), ProducerFenced(), RuntimeError("the connection dropped")]
)
async def test_a_failed_commit_aborts_drops_the_producer_and_is_no_kafka_error(
    error: Exception,
) -> None:
    factory = Factory(FakeTxnProducer(commit_error=error), FakeTxnProducer())
    out = output(factory)
    await out.producer()
    with pytest.raises(TransactionFailed) as raised:
        await out.commit(no_consumer(), {P0: 1})
    # the consume loop only logs a failed KafkaError commit and goes on: this one must not be
    assert not isinstance(raised.value, KafkaError)
    assert factory.made[0].calls == ["start", "begin", "offsets", "abort", "stop"]

    await out.producer()  # a fresh producer (same transactional id: it fences the old one)
    await out.commit(no_consumer(), {P0: 1})
    assert factory.made[1].calls == ["start", "begin", "offsets", "commit"]


async def test_close_aborts_an_open_transaction() -> None:
    factory = Factory(FakeTxnProducer())
    out = output(factory)
    await out.producer()
    await out.close()
    assert factory.made[0].calls == ["start", "begin", "abort", "stop"]


async def test_plain_output_commits_through_the_consumer() -> None:
    committed: list[dict[TopicPartition, int]] = []

    class Consumer:
        async def commit(self, offsets: dict[TopicPartition, int]) -> None:
            committed.append(offsets)

    shared = cast(AIOKafkaProducer, object())
    out = PlainOutput(shared)
    assert await out.producer() is shared
    await out.commit(cast(AIOKafkaConsumer, Consumer()), {P0: 2})
    assert committed == [{P0: 2}]


async def test_an_aborted_batch_is_consumed_again_by_a_new_consumer() -> None:
    """The loop restarts its consumer on ``TransactionFailed``; the new one fetches from the
    committed offsets (here: the start), so the aborted batch's records come back."""
    log = {P0: records(P0, b"a", b"b")}
    consumers = [FakeConsumer(log), FakeConsumer(log)]
    made: list[FakeConsumer] = []
    handled: list[bytes] = []
    factory = Factory(FakeTxnProducer(commit_error=KafkaTimeoutError()), FakeTxnProducer())
    out = output(factory)

    def make() -> AIOKafkaConsumer:
        made.append(consumers[min(len(made), len(consumers) - 1)])
        return cast(AIOKafkaConsumer, made[-1])

    async def handle(batch: Sequence[Record]) -> int:
        await out.producer()  # each record "dead-lettered" in the batch's transaction
        handled.extend(r.value for r in batch)
        return len(batch)

    consume = ConsumeLoop(
        name="test",
        make_consumer=make,
        handle=handle,
        commit=out.commit,
        batch_size=10,
        poll_ms=5,
        stop_grace=0.2,
        abandon_grace=0.2,
        restart_backoff=(0.01, 0.02),
    )
    stop = asyncio.Event()
    run: asyncio.Task[Any] = asyncio.create_task(consume.run(stop))
    await until(lambda: len(factory.made) == 2 and "commit" in factory.made[1].calls)
    await stopped(run, stop)
    await out.close()

    assert handled == [b"a", b"b", b"a", b"b"]  # the aborted batch, then again
    assert len(made) == 2
    assert made[0].stopped
    assert factory.made[0].calls[-2:] == ["abort", "stop"]
    assert factory.made[1].offsets == [({P0: 2}, "g")]
