"""``switchboard_kafka_consumer_lag``: highwater minus position over the assigned partitions,
set after each poll; an unknown highwater counts nothing and a failing lookup changes nothing."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from infra.consume import ConsumeLoop, Record
from tests.unit.test_consume import P0, P1, Commits, FakeConsumer, records, stopped, until

P2 = TopicPartition("t", 2)


class LaggingConsumer:
    """``FakeConsumer``'s in-memory log, plus aiokafka's ``assignment``/``highwater``/
    ``position``: the highwater is the end of each partition's log (``None`` for ``P2``: never
    fetched)."""

    def __init__(self, log: dict[TopicPartition, list[Any]]) -> None:
        self.inner = FakeConsumer(log=log)
        self.log = log
        self.broken = False
        self._client = self.inner._client
        self.start, self.stop = self.inner.start, self.inner.stop
        self.getmany, self.seek = self.inner.getmany, self.inner.seek

    def assignment(self) -> set[TopicPartition]:
        return {P0, P1, P2}

    def highwater(self, tp: TopicPartition) -> int | None:
        return None if tp == P2 else len(self.log.get(tp, []))

    async def position(self, tp: TopicPartition) -> int:
        if self.broken:
            raise RuntimeError("unassigned")
        return self.inner.position.get(tp, 0)


def lag(name: str) -> float | None:
    return REGISTRY.get_sample_value("switchboard_kafka_consumer_lag", {"consumer": name})


async def test_lag_is_what_the_handler_has_not_finished() -> None:
    consumer = LaggingConsumer(log={P0: records(P0, *[b"x"] * 5), P1: records(P1, b"y", b"z")})
    handled: list[int] = []

    async def handle(batch: Sequence[Record]) -> int:
        handled.append(len(batch))
        return len(batch) if batch[0].partition == 1 else 0  # P0 never finishes

    def make() -> AIOKafkaConsumer:
        return cast(AIOKafkaConsumer, consumer)

    options: dict[str, Any] = {"poll_ms": 5, "retry_backoff": (0.01, 0.02), "stop_grace": 0.2}
    loop = ConsumeLoop(
        name="lag-test",
        make_consumer=make,
        handle=handle,
        commit=Commits(),
        batch_size=10,
        **options,
    )
    stop = asyncio.Event()
    run = asyncio.create_task(loop.run(stop))
    try:
        await until(lambda: len(handled) >= 3)
        await until(lambda: lag("lag-test") == 5)  # P0 rewound to 0 of 5; P1 done; P2 unknown
        consumer.broken = True
        consumer.log[P1].extend(records(P1, b"1", b"2", b"3"))
        await asyncio.sleep(0.05)
        assert lag("lag-test") == 5, "a failing lookup leaves the last value"
    finally:
        await stopped(run, stop)
