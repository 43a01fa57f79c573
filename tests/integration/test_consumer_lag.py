"""``switchboard_kafka_consumer_lag`` on the real broker: unfinished records count, finished
ones do not."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest
from prometheus_client import REGISTRY

from infra import kafka
from infra.consume import ConsumeLoop, Record, commit_offsets, consumer_options
from infra.settings import Settings

pytestmark = pytest.mark.integration


async def test_lag_counts_what_is_not_finished(settings: Settings) -> None:
    topic = settings.topic("lag-test")
    await kafka.ensure_topics(settings, [topic])
    producer = kafka.create_producer(settings)
    await producer.start()
    try:
        for n in range(9):
            await producer.send_and_wait(topic, f"v{n}".encode(), key=f"k{n % 3}".encode())
    finally:
        await producer.stop()
    finishing = False

    async def handle(records: Sequence[Record]) -> int:
        return len(records) if finishing else 0

    name = f"lag-{uuid.uuid4().hex[:6]}"
    loop = ConsumeLoop(
        name=name,
        make_consumer=lambda: kafka.create_consumer(
            settings,
            topic,
            group_id=f"g-{uuid.uuid4().hex[:8]}",
            **consumer_options(batch_size=50, session_timeout_ms=6000),
        ),
        handle=handle,
        commit=commit_offsets,
        batch_size=50,
        retry_backoff=(0.05, 0.1),
    )

    def current() -> float | None:
        return REGISTRY.get_sample_value("switchboard_kafka_consumer_lag", {"consumer": name})

    async def lag(value: float) -> None:
        async with asyncio.timeout(30):
            while current() != value:  # noqa: ASYNC110 - a metric the loop sets
                await asyncio.sleep(0.05)

    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    try:
        await lag(9)
        finishing = True
        await lag(0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
