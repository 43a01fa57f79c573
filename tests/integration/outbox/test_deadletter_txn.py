"""Dead letters in Kafka transactions (``kafka_transactions``; Kafka pass only: Tansu has no
transactions): an invalid command's dead letter and its offset commit together, and an aborted
transaction leaves no visible dead letter and consumes the record again."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from infra import kafka
from infra.consume import TransactionalOutput
from infra.kafka import CE_HEADERS
from infra.resources import Resources, open_resources
from infra.settings import Settings
from outbox import commands
from tests import support
from tests.conftest import TEST_BROKER

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(TEST_BROKER != "kafka", reason="Kafka transactions: Kafka pass only"),
]


@pytest.fixture
async def resources(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Resources]:
    configured = settings.model_copy(
        update={
            "kafka_consumer_group": f"outbox-{uuid.uuid4().hex[:8]}",
            "kafka_transactions": True,
            "outbox_consumer_session_timeout_ms": 6000,  # Apache Kafka's minimum
        }
    )
    async with open_resources(configured) as res:
        yield res


async def produce_invalid(resources: Resources) -> None:
    topic = resources.settings.topic("outbound.commands.v1")
    await resources.producer.send_and_wait(topic, b"not json", key=b"k", headers=CE_HEADERS)


async def read_all(settings: Settings, topic: str, *, committed_only: bool) -> list[Any]:
    """Every record of ``topic`` up to its end: the last stable offset for a read_committed
    reader (transactions still open hide what follows), the high watermark otherwise."""
    reader = kafka.create_consumer(
        settings,
        settings.topic(topic),
        group_id=f"r-{uuid.uuid4()}",
        isolation_level="read_committed" if committed_only else "read_uncommitted",
    )
    await reader.start()
    out: list[Any] = []
    try:
        partitions = [
            TopicPartition(settings.topic(topic), p) for p in range(settings.kafka_topic_partitions)
        ]
        ends = await reader.end_offsets(partitions)
        async with asyncio.timeout(30):
            while True:
                positions = [await reader.position(tp) for tp in partitions]
                if all(at >= ends[tp] for at, tp in zip(positions, partitions, strict=True)):
                    break
                for records in (await reader.getmany(timeout_ms=300)).values():
                    out += records
    finally:
        await reader.stop()
    return out


async def wait_committed(settings: Settings) -> dict[TopicPartition, int]:
    """Until the command group's committed offsets reach the end of every partition."""
    return await support.wait_committed(
        settings, settings.topic("outbound.commands.v1"), settings.kafka_consumer_group
    )


async def run_until_committed(
    resources: Resources, output: TransactionalOutput | None = None
) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(commands.run_command_consumer(resources, stop, output=output))
    try:
        ends = await wait_committed(resources.settings)
        assert sum(ends.values()) > 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def test_an_invalid_command_yields_one_committed_dead_letter_with_its_offset(
    resources: Resources,
) -> None:
    assert isinstance(commands.command_output(resources), TransactionalOutput)
    await produce_invalid(resources)
    await run_until_committed(resources)

    (letter,) = await read_all(resources.settings, "deadletter.v1", committed_only=True)
    data = orjson.loads(letter.value)["data"]
    assert data["reason"] == "not_json"
    assert data["original"]["offset"] == 0


async def test_an_aborted_transaction_hides_its_dead_letter_and_the_record_comes_back(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = resources.settings
    txn_id = kafka.transactional_id(settings, settings.kafka_consumer_group)
    failed: list[str] = []

    def make_producer() -> AIOKafkaProducer:
        producer = kafka.create_producer(settings, transactional_id=txn_id)
        if not failed:  # the first producer fails at its commit, after the dead letter's ack

            async def commit_transaction() -> None:
                failed.append(txn_id)
                raise KafkaTimeoutError("the producer failed before the commit")

            monkeypatch.setattr(producer, "commit_transaction", commit_transaction)
        return producer

    output = TransactionalOutput(
        make_producer=make_producer,
        group_id=settings.kafka_consumer_group,
        name=commands.COMMANDS_CONSUMER,
        timeout=20.0,
    )
    await produce_invalid(resources)
    await run_until_committed(resources, output)

    assert failed == [txn_id]
    written = await read_all(settings, "deadletter.v1", committed_only=False)
    visible = await read_all(settings, "deadletter.v1", committed_only=True)
    # both attempts reached the log (the record was consumed again), one was aborted
    assert len(written) == 2
    assert {orjson.loads(r.value)["id"] for r in written} == {orjson.loads(visible[0].value)["id"]}
    assert len(visible) == 1
    assert orjson.loads(visible[0].value)["data"]["original"]["offset"] == 0
