"""The generic consume loop on the real broker: partition order, the rewind of an unfinished
record, offsets committed through the injected commit, and a new consumer of the same group
resuming after them."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra import kafka
from infra.consume import ConsumeLoop, Record, commit_offsets, consumer_options
from infra.settings import Settings
from tests.support import wait_committed

pytestmark = pytest.mark.integration


class Handler:
    """Keeps what it finished, per partition; refuses each value of ``refuse`` once."""

    def __init__(self, refuse: set[bytes] | None = None) -> None:
        self.refuse = refuse or set()
        self.finished: dict[int, list[tuple[int, bytes]]] = {}

    async def __call__(self, records: Sequence[Record]) -> int:
        for done, record in enumerate(records):
            if record.value in self.refuse:
                self.refuse.discard(record.value)
                return done
            self.finished.setdefault(record.partition, []).append((record.offset, record.value))
        return len(records)

    def values(self) -> list[bytes]:
        return sorted(v for entries in self.finished.values() for _, v in entries)


async def run_until_committed(
    settings: Settings, topic: str, group: str, handle: Handler
) -> list[dict[TopicPartition, int]]:
    commits: list[dict[TopicPartition, int]] = []

    async def commit(consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]) -> None:
        commits.append(dict(offsets))
        await commit_offsets(consumer, offsets)

    loop = ConsumeLoop(
        name="test",
        make_consumer=lambda: kafka.create_consumer(
            settings,
            topic,
            group_id=group,
            **consumer_options(batch_size=50, session_timeout_ms=6000),
        ),
        handle=handle,
        commit=commit,
        batch_size=50,
        retry_backoff=(0.05, 0.1),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await wait_committed(settings, topic, group)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    return commits


async def test_records_are_committed_once_finished_and_not_handled_again(
    settings: Settings,
) -> None:
    topic = settings.topic("consume-test")
    await kafka.ensure_topics(settings, [topic])
    producer = kafka.create_producer(settings)
    await producer.start()
    try:
        for n in range(9):
            await producer.send_and_wait(topic, f"v{n}".encode(), key=f"k{n % 3}".encode())
        group = f"g-{uuid.uuid4().hex[:8]}"
        first = Handler(refuse={b"v4"})
        commits = await run_until_committed(settings, topic, group, first)

        assert first.values() == sorted(f"v{n}".encode() for n in range(9))
        assert first.refuse == set()  # v4 was refused once, then redelivered and finished
        for entries in first.finished.values():  # each partition in order, nothing twice
            offsets = [offset for offset, _ in entries]
            assert offsets == list(range(len(offsets)))
        assert commits  # through the injected commit

        await producer.send_and_wait(topic, b"v9", key=b"k0")
        second = Handler()
        await run_until_committed(settings, topic, group, second)
        assert second.values() == [b"v9"]  # the group resumes after the committed offsets
    finally:
        await producer.stop()
