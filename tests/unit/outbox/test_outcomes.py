"""The outcome writer's batching and retry rules (``outbox.outcomes.OutcomeWriter``), with the
database write replaced: what reaches ``write``, in which batches, and what happens on failure.
The write itself (rows, attempts, events) is covered against PostgreSQL in
tests/integration/outbox/test_worker.py."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any, cast

from sqlalchemy.exc import OperationalError

from infra.resources import Resources
from infra.settings import Settings
from outbox.claims import Claim, InFlight
from outbox.outcomes import Outcome, OutcomeWriter, WorkerStats
from outbox.retry import RetryPolicy


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def claim() -> Claim:
    message = SimpleNamespace(id=uuid.uuid4(), channel_id=uuid.uuid4())
    return Claim(cast(Any, message), deadline=0.0)


def writer(
    in_flight: InFlight, clock: FakeClock, on_written: list[int], **settings: Any
) -> OutcomeWriter:
    values = {"outbox_flush_interval": 0.0, "outbox_claim_batch": 2, **settings}
    resources = cast(Resources, SimpleNamespace(settings=Settings(_env_file=None, **values)))
    return OutcomeWriter(
        resources,
        owner="me",
        policy=RetryPolicy(),
        in_flight=in_flight,
        stats=WorkerStats(),
        on_written=lambda: on_written.append(len(in_flight)),
        clock=clock,
    )


async def test_outcomes_are_written_in_batches_then_leave_the_in_flight_count() -> None:
    in_flight, woken = InFlight(), list[int]()
    w = writer(in_flight, FakeClock(), woken)
    batches: list[list[Outcome]] = []

    async def write(batch: list[Outcome]) -> None:
        batches.append(batch)

    w.write = write  # type: ignore[method-assign]
    claims = [claim() for _ in range(5)]
    for c in claims:
        in_flight.add(c)
        w.finish(c, "release")
    w.finish(claims[0], "expired")  # a second outcome for one claim is ignored
    w.close()
    await asyncio.wait_for(w.run(), 5)
    assert [len(b) for b in batches] == [4, 1]  # at most twice the claim batch per write
    assert [o.claim for b in batches for o in b] == claims
    assert {o.kind for b in batches for o in b} == {"release"}
    assert len(in_flight) == 0
    assert woken == [1, 0], "the claim loop is woken after each committed batch"


async def test_a_database_error_is_retried_until_the_write_succeeds() -> None:
    in_flight, woken = InFlight(), list[int]()
    w = writer(in_flight, FakeClock(), woken)
    tries = 0

    async def write(batch: list[Outcome]) -> None:
        nonlocal tries
        tries += 1
        if tries < 3:
            raise OperationalError("UPDATE", {}, ConnectionError("database down"))

    w.write = write  # type: ignore[method-assign]
    c = claim()
    in_flight.add(c)
    w.finish(c, "release")
    w.close()
    await asyncio.wait_for(w.run(), 5)
    assert tries == 3
    assert len(in_flight) == 0


async def test_while_stopping_a_database_that_stays_down_is_given_up_after_the_deadline() -> None:
    clock = FakeClock()
    in_flight, woken = InFlight(), list[int]()
    w = writer(in_flight, clock, woken, outbox_shutdown_deadline=3.0)
    w.stopping = True
    tries = 0

    async def write(batch: list[Outcome]) -> None:
        nonlocal tries
        tries += 1
        clock.now += 1.0
        raise OperationalError("UPDATE", {}, ConnectionError("database down"))

    w.write = write  # type: ignore[method-assign]
    w.finish(claim(), "release")
    w.close()
    await asyncio.wait_for(w.run(), 10)
    assert tries == 4, (
        "tried until the deadline (3 s on the worker's clock), then left to the lease"
    )


def test_throttles_are_merged_per_channel_keeping_the_longest() -> None:
    w = writer(InFlight(), FakeClock(), [])
    cid = uuid.uuid4()
    w.note_throttle(cid, 2.0)
    w.note_throttle(cid, 1.0)
    assert w._throttles == {cid: 2.0}
