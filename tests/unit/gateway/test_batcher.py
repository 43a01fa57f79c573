"""Group commit batching (``gateway.batcher``) and the batch plan (``gateway.batchplan``), with a
fake timer: no database, no broker."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import pytest

from gateway.batcher import GroupCommit
from gateway.batchplan import Accepted, BatchPlan, Webhook
from gateway.errors import NotDurable


@dataclass
class FakeTimer:
    """``call_later`` that never fires by itself: ``fire()`` runs what is due."""

    pending: list[tuple[float, Callable[[], None]]] = field(default_factory=list)

    def __call__(self, delay: float, callback: Callable[[], None]) -> FakeTimer.Handle:
        entry = (delay, callback)
        self.pending.append(entry)
        return FakeTimer.Handle(self, entry)

    def fire(self) -> None:
        due, self.pending = self.pending, []
        for _, callback in due:
            callback()

    @dataclass
    class Handle:
        timer: FakeTimer
        entry: tuple[float, Callable[[], None]]

        def cancel(self) -> None:
            if self.entry in self.timer.pending:
                self.timer.pending.remove(self.entry)


class Runner:
    """A controllable ``run``: records batches; each waits for ``release`` events."""

    def __init__(self, *, auto_claim: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.claims: list[Callable[[], None]] = []
        self.done: list[asyncio.Event] = []
        self.auto_claim = auto_claim
        self.fail_with: BaseException | None = None

    async def __call__(
        self, items: Sequence[int], claimed: Callable[[], None]
    ) -> list[int | BaseException]:
        self.batches.append(list(items))
        self.claims.append(claimed)
        release = asyncio.Event()
        self.done.append(release)
        if self.auto_claim:
            claimed()
        await release.wait()
        if self.fail_with is not None:
            raise self.fail_with
        return [ValueError(i) if i < 0 else i * 10 for i in items]


async def turn(n: int = 3) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def batcher(
    runner: Runner, timer: FakeTimer, *, max_size: int = 100, max_in_flight: int = 8
) -> GroupCommit[int, int]:
    return GroupCommit(
        runner, max_size=max_size, max_delay=0.002, max_in_flight=max_in_flight, call_later=timer
    )


async def test_submissions_of_one_loop_turn_form_one_batch() -> None:
    runner, timer = Runner(), FakeTimer()
    gc = batcher(runner, timer)
    futures = [gc.submit(i) for i in range(5)]
    await turn()
    assert runner.batches == [[0, 1, 2, 3, 4]]
    runner.done[0].set()
    assert await asyncio.gather(*futures) == [0, 10, 20, 30, 40]


async def test_a_batch_forms_while_the_previous_one_claims() -> None:
    runner, timer = Runner(), FakeTimer()
    gc = batcher(runner, timer)
    first = gc.submit(1)
    await turn()
    later = [gc.submit(i) for i in (2, 3, 4)]
    await turn()
    assert runner.batches == [[1]], "waits for the claim step of batch 1"
    assert len(timer.pending) == 1, "with a max_delay bound"
    runner.claims[0]()  # batch 1 claimed: it now waits for the broker; batch 2 goes
    await turn()
    assert runner.batches == [[1], [2, 3, 4]]
    assert not timer.pending, "the timer is cancelled once the batch closes"
    assert gc.in_flight == 2, "pipelined"
    runner.done[1].set()
    assert await asyncio.gather(*later) == [20, 30, 40]
    assert not first.done()
    runner.done[0].set()
    assert await first == 10


async def test_max_delay_starts_a_batch_while_a_claim_is_stuck() -> None:
    runner, timer = Runner(), FakeTimer()
    gc = batcher(runner, timer)
    gc.submit(1)
    await turn()
    gc.submit(2)
    gc.submit(3)
    await turn()
    assert runner.batches == [[1]]
    timer.fire()  # e.g. batch 1 waits on a row lock: 2 and 3 must not wait for it
    await turn()
    assert runner.batches == [[1], [2, 3]]
    for event in runner.done:
        event.set()
    await gc.close()


async def test_max_size_closes_a_batch_at_once() -> None:
    runner, timer = Runner(), FakeTimer()
    gc = batcher(runner, timer, max_size=3)
    gc.submit(0)
    await turn()
    for i in range(1, 8):
        gc.submit(i)
    await turn()
    assert runner.batches == [[0], [1, 2, 3], [4, 5, 6]]
    assert gc.waiting == 1
    for event in runner.done:
        event.set()
    await gc.close()
    assert runner.batches[-1] == [7]


async def test_in_flight_cap() -> None:
    runner, timer = Runner(auto_claim=True), FakeTimer()
    gc = batcher(runner, timer, max_in_flight=2)
    futures = [gc.submit(0)]
    await turn()
    futures.append(gc.submit(1))
    await turn()
    futures.append(gc.submit(2))
    await turn()
    timer.fire()
    await turn()
    assert runner.batches == [[0], [1]], "two in flight, the third waits"
    runner.done[0].set()
    await turn()
    assert runner.batches == [[0], [1], [2]]
    for event in runner.done:
        event.set()
    assert await asyncio.gather(*futures) == [0, 10, 20]


async def test_a_cancelled_submitter_does_not_break_its_batch() -> None:
    runner, timer = Runner(), FakeTimer()
    gc = batcher(runner, timer)

    async def submitter(i: int) -> int:
        return await gc.submit(i)

    tasks = [asyncio.create_task(submitter(i)) for i in range(3)]
    await turn()
    tasks[1].cancel()  # the client disconnected mid-batch
    await turn()
    runner.done[0].set()
    assert await tasks[0] == 0
    assert await tasks[2] == 20
    with pytest.raises(asyncio.CancelledError):
        await tasks[1]
    assert runner.batches == [[0, 1, 2]], "the cancelled item was still processed"


async def test_per_item_exceptions_and_a_failing_run() -> None:
    runner, timer = Runner(), FakeTimer()
    gc = batcher(runner, timer)
    ok, bad = gc.submit(1), gc.submit(-1)
    await turn()
    runner.done[0].set()
    assert await ok == 10
    with pytest.raises(ValueError, match="-1"):
        await bad
    runner.fail_with = RuntimeError("bug")
    futures = [gc.submit(2), gc.submit(3)]
    await turn()
    runner.done[1].set()
    for future in futures:
        with pytest.raises(RuntimeError, match="bug"):
            await future
    assert gc.in_flight == 0


# ---- the batch plan ------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    id: str
    subject: str


def webhook(*events: tuple[str, str], count: int | None = None) -> Webhook:
    evs = cast(Any, [Event(i, s) for i, s in events])
    return Webhook("whatsapp", cast(Any, None), evs, count or len(evs), b"{}", None, {})


def owners_of(webhooks: Sequence[Webhook]) -> dict[str, int]:
    owners: dict[str, int] = {}
    for index, w in enumerate(webhooks):
        for e in w.events:
            owners.setdefault(e.id, index)
    return owners


def test_plan_dedups_within_the_batch_and_against_earlier_commits() -> None:
    hooks = [
        webhook(("a", "c1"), ("b", "c1")),
        webhook(("a", "c1")),  # redelivery inside the batch
        webhook(("old", "c2")),  # committed before
        webhook(("d", "c3"), ("a", "c1"), count=3),
    ]
    plan = BatchPlan(
        hooks, owners_of(hooks), frozenset({"a", "b", "d"}), frozenset(), broker_suspect=False
    )
    assert [e.id for e in plan.direct()] == ["a", "b", "d"]
    plan.settle([True, True, True])
    assert plan.accepted() == [
        Accepted(2, 2, 0, 2, 0),
        Accepted(1, 0, 1, 0, 0),
        Accepted(1, 0, 1, 0, 0),
        Accepted(3, 1, 2, 1, 0),
    ]


def test_plan_spools_after_a_failed_publish_and_behind_spooled_conversations() -> None:
    hooks = [
        webhook(("a1", "A"), ("a2", "A"), ("b1", "B")),
        webhook(("s1", "S")),
    ]
    plan = BatchPlan(
        hooks,
        owners_of(hooks),
        frozenset({"a1", "a2", "b1", "s1"}),
        frozenset({"S"}),
        broker_suspect=False,
    )
    assert [e.id for e in plan.direct()] == ["a1", "a2", "b1"]
    plan.settle([False, True, True])  # a1 failed: a2 follows it to the spool (order)
    assert [e.id for _, e in plan.spool] == ["a1", "a2", "s1"]
    assert plan.accepted() == [Accepted(3, 3, 0, 1, 2), Accepted(1, 1, 0, 0, 1)]


def test_plan_spools_everything_while_the_broker_is_suspect() -> None:
    hooks = [webhook(("a", "A")), webhook(("b", "B"))]
    plan = BatchPlan(
        hooks, owners_of(hooks), frozenset({"a", "b"}), frozenset(), broker_suspect=True
    )
    assert plan.direct() == []
    plan.settle([])
    assert [e.id for _, e in plan.spool] == ["a", "b"]


def test_plan_after_a_failed_commit() -> None:
    """Webhooks whose events all reached Kafka (or were committed before) still get 200,
    without dedup; a webhook with anything headed for the spool gets 503."""
    hooks = [
        webhook(("a", "A")),
        webhook(("b", "B")),
        webhook(("b", "B")),  # shares b, which failed to publish
        webhook(("a", "A"), ("old", "O")),
    ]
    plan = BatchPlan(
        hooks, owners_of(hooks), frozenset({"a", "b"}), frozenset(), broker_suspect=False
    )
    plan.settle([True, False])
    results = plan.after_failed_commit()
    assert results[0] == Accepted(1, 1, 0, 1, 0, deduplicated=False)
    assert isinstance(results[1], NotDurable)
    assert isinstance(results[2], NotDurable)
    assert results[3] == Accepted(2, 0, 0, 0, 0, deduplicated=False)
