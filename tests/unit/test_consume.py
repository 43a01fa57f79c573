"""The generic consume loop with its seams injected: a consumer factory, a partition handler
and the commit. The consumer here is an in-memory partition log with aiokafka's ``getmany`` /
``seek`` / ``start`` / ``stop`` surface; the real broker is in tests/integration/test_consume.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaConnectionError

from infra.consume import ConsumeLoop, Record, consumer_options, per_record

P0 = TopicPartition("t", 0)
P1 = TopicPartition("t", 1)


@dataclass(frozen=True)
class Rec:
    topic: str
    partition: int
    offset: int
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def records(tp: TopicPartition, *values: bytes) -> list[Rec]:
    return [Rec(tp.topic, tp.partition, n, v) for n, v in enumerate(values)]


class _Client:
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


@dataclass
class FakeConsumer:
    """Serves ``log`` from each partition's position; ``seek`` moves the position back."""

    log: dict[TopicPartition, list[Rec]]
    start_with: Callable[[], Awaitable[None]] | None = None
    stop_with: Callable[[], Awaitable[None]] | None = None
    poll_error: Exception | None = None
    position: dict[TopicPartition, int] = field(default_factory=dict)
    seeks: list[tuple[TopicPartition, int]] = field(default_factory=list)
    start_calls: int = 0
    stopped: bool = False
    _client: _Client = field(default_factory=_Client)

    async def start(self) -> None:
        self.start_calls += 1
        if self.start_with is not None:
            await self.start_with()

    async def stop(self) -> None:
        if self.stop_with is not None:
            await self.stop_with()
        self.stopped = True

    async def getmany(self, *, timeout_ms: int, max_records: int) -> dict[TopicPartition, Any]:
        if self.poll_error is not None:
            raise self.poll_error
        batch: dict[TopicPartition, list[Rec]] = {}
        room = max_records
        for tp, entries in self.log.items():
            at = self.position.get(tp, 0)
            taken = entries[at : at + room]
            if taken:
                batch[tp] = taken
                self.position[tp] = at + len(taken)
                room -= len(taken)
        if not batch:
            await asyncio.sleep(timeout_ms / 1000)
        return batch

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append((tp, offset))
        self.position[tp] = offset


class Commits:
    """The injected commit: records what it was asked to commit; refuses the first ``fail``."""

    def __init__(self, fail: int = 0, error: Exception | None = None) -> None:
        self.offsets: list[dict[TopicPartition, int]] = []
        self.fail = fail
        self.error = error or CommitFailedError("rebalanced")

    async def __call__(
        self, consumer: AIOKafkaConsumer, offsets: dict[TopicPartition, int]
    ) -> None:
        if self.fail:
            self.fail -= 1
            raise self.error
        self.offsets.append(dict(offsets))

    def last(self, tp: TopicPartition) -> int | None:
        return next((o[tp] for o in reversed(self.offsets) if tp in o), None)


def loop(
    consumers: list[FakeConsumer],
    handle: Callable[[Sequence[Record]], Awaitable[int]],
    commit: Commits,
    **options: Any,
) -> tuple[ConsumeLoop, list[FakeConsumer]]:
    """A loop whose factory hands out ``consumers`` in turn (the last one again when done);
    returns it with the list of consumers it actually made."""
    made: list[FakeConsumer] = []

    def make() -> AIOKafkaConsumer:
        made.append(consumers[min(len(made), len(consumers) - 1)])
        return cast(AIOKafkaConsumer, made[-1])

    defaults: dict[str, Any] = {
        "poll_ms": 5,
        "stop_grace": 0.2,
        "abandon_grace": 0.2,
        "retry_backoff": (0.01, 0.02),
        "restart_backoff": (0.01, 0.02),
    }
    defaults.update(options)
    return ConsumeLoop(
        name="test", make_consumer=make, handle=handle, commit=commit, batch_size=10, **defaults
    ), made


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(30):
        while True:
            if condition():
                return
            await asyncio.sleep(0.005)


async def stopped(run: asyncio.Task[None], stop: asyncio.Event) -> None:
    stop.set()
    await asyncio.wait_for(run, 30)


async def test_finished_records_are_committed_and_the_rest_redelivered_in_order() -> None:
    seen: list[tuple[int, bytes]] = []
    refused = {b"b"}

    async def handle(batch: Sequence[Record]) -> int:
        for done, record in enumerate(batch):
            if record.value in refused:
                refused.discard(record.value)  # once: the retry succeeds
                return done
            seen.append((record.partition, record.value))
        return len(batch)

    consumer = FakeConsumer({P0: records(P0, b"a", b"b", b"c"), P1: records(P1, b"x", b"y")})
    commit = Commits()
    consume, _ = loop([consumer], handle, commit)
    stop = asyncio.Event()
    run = asyncio.create_task(consume.run(stop))
    await until(lambda: commit.last(P0) == 3)
    await stopped(run, stop)

    assert [v for p, v in seen if p == 0] == [b"a", b"b", b"c"]
    assert [v for p, v in seen if p == 1] == [b"x", b"y"]
    assert consumer.seeks == [(P0, 1)]  # rewound to the first unfinished record
    assert commit.offsets[0] == {P0: 1, P1: 2}  # the finished prefix, before the retry
    assert commit.offsets[1] == {P0: 3}
    assert consumer.stopped


async def test_nothing_finished_commits_nothing() -> None:
    async def handle(batch: Sequence[Record]) -> int:
        return 0

    consumer = FakeConsumer({P0: records(P0, b"a")})
    commit = Commits()
    consume, _ = loop([consumer], handle, commit)
    stop = asyncio.Event()
    run = asyncio.create_task(consume.run(stop))
    await until(lambda: len(consumer.seeks) >= 3)  # retried, from the same record
    await stopped(run, stop)
    assert set(consumer.seeks) == {(P0, 0)}
    assert commit.offsets == []


async def test_a_commit_kafka_refuses_is_logged_and_the_consumer_goes_on() -> None:
    async def handle(batch: Sequence[Record]) -> int:
        return len(batch)

    consumer = FakeConsumer({P0: records(P0, b"a")})
    commit = Commits(fail=1)
    consume, made = loop([consumer], handle, commit)
    stop = asyncio.Event()
    run = asyncio.create_task(consume.run(stop))
    await until(lambda: consumer.position.get(P0) == 1 and commit.fail == 0)
    consumer.log[P0] += [Rec("t", 0, 1, b"b")]
    await until(lambda: commit.last(P0) == 2)
    await stopped(run, stop)
    assert made == [consumer]  # not restarted


async def test_any_other_commit_failure_restarts_the_consumer() -> None:
    """An error that is not Kafka's (a crash between the outcome and the commit) fails the
    consumer: it is closed, a new one starts and the uncommitted records come back."""
    handled: list[bytes] = []

    async def handle(batch: Sequence[Record]) -> int:
        handled.extend(r.value for r in batch)
        return len(batch)

    log = {P0: records(P0, b"a")}
    first, second = FakeConsumer(log), FakeConsumer(log)
    commit = Commits(fail=1, error=RuntimeError("killed"))
    consume, made = loop([first, second], handle, commit)
    stop = asyncio.Event()
    run = asyncio.create_task(consume.run(stop))
    await until(lambda: commit.last(P0) == 1)
    await stopped(run, stop)
    assert made == [first, second]
    assert first.stopped
    assert second.stopped
    assert handled == [b"a", b"a"]


async def test_a_consumer_that_fails_to_start_or_poll_is_replaced() -> None:
    async def refuse() -> None:
        raise KafkaConnectionError("no broker")

    async def handle(batch: Sequence[Record]) -> int:
        return len(batch)

    log = {P0: records(P0, b"a")}
    unstarted = FakeConsumer(log, start_with=refuse)
    failing = FakeConsumer(log, poll_error=RuntimeError("poll"))
    working = FakeConsumer(log)
    commit = Commits()
    consume, made = loop([unstarted, failing, working], handle, commit)
    stop = asyncio.Event()
    run = asyncio.create_task(consume.run(stop))
    await until(lambda: commit.last(P0) == 1)
    await stopped(run, stop)
    assert made == [unstarted, failing, working]
    assert all(c.stopped for c in made)


async def test_stop_abandons_a_start_that_never_finishes() -> None:
    """A group join the broker never completes: ``stop`` must not wait for it."""
    forever = asyncio.Event()

    async def hang() -> None:
        await forever.wait()

    async def handle(batch: Sequence[Record]) -> int:
        raise AssertionError("never started")

    consumer = FakeConsumer({}, start_with=hang)
    consume, made = loop([consumer], handle, Commits())
    stop = asyncio.Event()
    run = asyncio.create_task(consume.run(stop))
    await until(lambda: consumer.start_calls == 1)
    await stopped(run, stop)
    assert made == [consumer]  # not restarted after stop
    assert consumer.stopped


async def test_stop_abandons_a_start_that_does_not_even_unwind() -> None:
    """A start that outlives its cancellation is left behind (``infra.aio.abandon``):
    the loop returns after ``abandon_grace`` and still closes the consumer."""
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # keeps going after the first cancellation
            raise

    async def handle(batch: Sequence[Record]) -> int:
        raise AssertionError("never started")

    consumer = FakeConsumer({}, start_with=stubborn)
    consume, made = loop([consumer], handle, Commits())
    stop = asyncio.Event()
    run = asyncio.create_task(consume.run(stop))
    await until(lambda: consumer.start_calls == 1)
    await stopped(run, stop)
    assert made == [consumer]
    assert consumer.stopped
    release.set()  # let the abandoned start end within this test


async def test_closing_is_bounded_and_then_closes_the_connections() -> None:
    async def hang() -> None:
        await asyncio.Event().wait()

    async def handle(batch: Sequence[Record]) -> int:
        return len(batch)

    consumer = FakeConsumer({P0: records(P0, b"a")}, stop_with=hang)
    commit = Commits()
    consume, _ = loop([consumer], handle, commit, stop_grace=0.05)
    stop = asyncio.Event()
    run = asyncio.create_task(consume.run(stop))
    await until(lambda: commit.last(P0) == 1)
    await stopped(run, stop)
    assert not consumer.stopped  # stop() never returned ...
    assert consumer._client.closed  # ... so the connections were closed directly


async def test_per_record_stops_at_the_first_record_that_raises() -> None:
    handled: list[bytes] = []

    async def handle(record: Record) -> None:
        if record.value == b"bad":
            raise RuntimeError("database away")
        handled.append(record.value)

    partition = per_record(handle)
    assert await partition(records(P0, b"a", b"b")) == 2
    assert await partition(records(P0, b"a", b"bad", b"c")) == 1
    assert await partition([]) == 0
    assert handled == [b"a", b"b", b"a"]


@pytest.mark.parametrize(("session", "heartbeat"), [(10_000, 3333), (600, 300)])
def test_consumer_options_follow_the_batch_and_the_session(session: int, heartbeat: int) -> None:
    assert consumer_options(batch_size=50, session_timeout_ms=session) == {
        "max_poll_records": 50,
        "session_timeout_ms": session,
        "heartbeat_interval_ms": heartbeat,
    }
