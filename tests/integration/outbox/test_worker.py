"""The delivery worker against real PostgreSQL, the real broker and the fake platform servers.

Test data goes straight into the tables (a channel row with encrypted credentials, queued
``outbox_messages`` rows), so these tests do not depend on the intake. Schedules and leases are
tiny (see ``worker_settings``); nothing here asserts on speed (bench/outbox.py does).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import dataclasses
import os
import signal
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from channels.models import Channel
from fake_platforms.server import FakePlatformServer, Fault, RecordedRequest
from infra import kafka
from infra.crypto import SecretBox, generate_key
from infra.resources import Resources, open_resources
from infra.settings import Settings
from outbox import leases
from outbox.app import run_worker
from outbox.models import (
    ChannelLease,
    OutboxAttempt,
    OutboxEvent,
    OutboxMessage,
    OutboxWorker,
)
from outbox.worker import DeliveryWorker
from tests.support import StallingProxy

pytestmark = pytest.mark.integration

DONE = frozenset({"sent", "failed", "dead", "cancelled"})


# ---- harness -----------------------------------------------------------------------------------


@pytest.fixture
async def fake() -> AsyncIterator[FakePlatformServer]:
    async with FakePlatformServer() as server:
        yield server


def tune(settings: Settings, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "outbox_retry_schedule": (0.05, 0.1, 0.2),
        "outbox_retry_jitter": 0.0,
        "outbox_http_timeout": 1.0,
        "outbox_message_lease": 4.0,
        "outbox_channel_lease": 3.0,
        "outbox_channel_renew_interval": 0.1,
        "outbox_poll_interval": 0.02,
        "outbox_maintenance_interval": 0.2,
        "outbox_shutdown_deadline": 3.0,
        "outbox_handover_gap": 1.0,
        "outbox_flush_interval": 0.002,
    }
    values.update(overrides)
    return settings.model_copy(update=values)


@pytest.fixture
async def resources(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Resources]:
    async with open_resources(tune(settings)) as res:
        yield res


async def make_channel(
    res: Resources, fake: FakePlatformServer, *, rate: float | None = None
) -> uuid.UUID:
    async with res.sessionmaker() as session, session.begin():
        channel = Channel(
            platform="whatsapp",
            name="test",
            account_id=f"1065{uuid.uuid4().int % 10**8:08d}",
            secrets=res.secret_box.encrypt_json(
                {"access_token": "EAAtest", "app_secret": "s", "verify_token": "v"}
            ),
            api_base_url=fake.base_url,
            send_rate_per_second=rate,
        )
        session.add(channel)
        await session.flush()
        return channel.id


def foreign_secrets() -> bytes:
    """Channel secrets encrypted with a key this deployment does not have (a key-rotation
    mistake): ``SecretBoxError`` when the worker loads the channel."""
    return SecretBox([generate_key()]).encrypt_json({"access_token": "EAAlost"})


async def enqueue(
    res: Resources,
    channel_id: uuid.UUID,
    recipients: Sequence[str],
    *,
    not_after: timedelta = timedelta(hours=1),
    tag: str = "m",
) -> list[uuid.UUID]:
    """One queued text message per recipient entry, in order (``seq`` follows the list)."""
    now = datetime.now(UTC)
    ids = []
    async with res.sessionmaker() as session, session.begin():
        for i, to in enumerate(recipients):
            message = OutboxMessage(
                command_id=f"cmd-{uuid.uuid4().hex}",
                request_hash="0" * 64,
                source="api",
                channel_id=channel_id,
                platform="whatsapp",
                recipient=to,
                conversation_key=f"{channel_id}:{to}",
                content={"kind": "text", "text": f"{tag}{i}"},
                message_metadata={"i": i},
                state="queued",
                next_attempt_at=now,
                not_after=now + not_after,
            )
            session.add(message)
            await session.flush()
            ids.append(message.id)
    return ids


async def states(res: Resources, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, OutboxMessage]:
    async with res.sessionmaker() as session:
        rows = await session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(ids)))
        return {m.id: m for m in rows}


async def eventually(check: Callable[[], Awaitable[bool]], limit: float = 20.0) -> None:
    """Poll until ``check`` holds; the limit only guards against a hang."""
    async with asyncio.timeout(limit):
        while not await check():  # noqa: ASYNC110 - polling another process's state
            await asyncio.sleep(0.05)


async def all_done(res: Resources, ids: Sequence[uuid.UUID]) -> None:
    async def check() -> bool:
        rows = await states(res, ids)
        return all(m.state in DONE for m in rows.values())

    await eventually(check)


@contextlib.asynccontextmanager
async def running(res: Resources, owner: str = "w1") -> AsyncIterator[DeliveryWorker]:
    stop = asyncio.Event()
    worker = DeliveryWorker(res, owner=owner)
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


async def attempts_of(res: Resources, message_id: uuid.UUID) -> list[OutboxAttempt]:
    async with res.sessionmaker() as session:
        rows = await session.scalars(
            select(OutboxAttempt)
            .where(OutboxAttempt.message_id == message_id)
            .order_by(OutboxAttempt.attempt, OutboxAttempt.id)
        )
        return list(rows)


async def staged_events(res: Resources) -> list[dict[str, Any]]:
    async with res.sessionmaker() as session:
        rows = await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))
        return [orjson.loads(r.value) for r in rows]


def text_of(request: RecordedRequest) -> str:
    return str(request.json["text"]["body"])


def max_in_window(times: Sequence[float], per: float = 1.0) -> int:
    """Most arrivals in any half-open window [t, t + per)."""
    ordered = sorted(times)
    return max((bisect.bisect_left(ordered, t + per) - i for i, t in enumerate(ordered)), default=0)


async def send_starts(res: Resources, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[float]]:
    """Channel → the instants its requests were started (attempt ``started_at``, taken in the
    event-loop step of the pacer's grant). The rate promise is checked on these rather than on
    the fake server's arrival times, which add the test machine's scheduling jitter."""
    async with res.sessionmaker() as session:
        rows = await session.execute(
            select(OutboxMessage.channel_id, OutboxAttempt.started_at)
            .join(OutboxMessage, OutboxMessage.id == OutboxAttempt.message_id)
            .where(OutboxMessage.id.in_(ids))
        )
        starts: dict[uuid.UUID, list[float]] = {}
        for channel_id, started_at in rows.all():
            starts.setdefault(channel_id, []).append(started_at.timestamp())
    return starts


# ---- outcomes ----------------------------------------------------------------------------------


async def test_sends_records_the_attempt_and_stages_the_event(
    resources: Resources, fake: FakePlatformServer
) -> None:
    channel = await make_channel(resources, fake)
    ids = await enqueue(resources, channel, ["15550001", "15550002", "15550003"])
    async with running(resources) as worker:
        await all_done(resources, ids)
    rows = await states(resources, ids)
    assert {m.state for m in rows.values()} == {"sent"}
    assert all(
        m.platform_message_id and m.platform_message_id.startswith("wamid.") for m in rows.values()
    )
    assert all(m.attempts == 1 and m.sent_at and m.lease_owner is None for m in rows.values())
    assert sorted(r.recipient or "" for r in fake.requests) == ["15550001", "15550002", "15550003"]
    history = await attempts_of(resources, ids[0])
    assert [(a.attempt, a.outcome, a.http_status, a.worker) for a in history] == [
        (1, "sent", 200, "w1")
    ]
    events = await staged_events(resources)
    assert sorted((e["data"]["message_id"], e["type"]) for e in events) == sorted(
        (str(i), "message.sent") for i in ids
    )
    sent = next(e for e in events if e["data"]["message_id"] == str(ids[0]))
    assert sent["data"]["platform_message_id"] == rows[ids[0]].platform_message_id
    assert sent["data"]["attempt"] == 1
    assert sent["data"]["metadata"] == {"i": 0}
    assert worker.stats.sent == 3


async def test_429_5xx_and_timeouts_are_retried_on_schedule_then_delivered(
    resources: Resources, fake: FakePlatformServer
) -> None:
    channel = await make_channel(resources, fake)
    fake.inject(Fault.rate_limited(retry_after=0.3, recipient="1555000429"))
    fake.inject(Fault.server_error(503, recipient="1555000503"))
    fake.inject(Fault.hang_up(recipient="1555000408"))
    ids = await enqueue(resources, channel, ["1555000429", "1555000503", "1555000408"])
    async with running(resources):
        await all_done(resources, ids)
    rows = await states(resources, ids)
    assert [rows[i].state for i in ids] == ["sent", "sent", "sent"]
    assert [rows[i].attempts for i in ids] == [2, 2, 2]

    throttled, failed_5xx, timed_out = [await attempts_of(resources, i) for i in ids]
    assert [(a.outcome, a.http_status, a.retry_after) for a in throttled] == [
        ("retryable", 429, 0.3),
        ("sent", 200, None),
    ]
    assert [(a.outcome, a.http_status) for a in failed_5xx] == [("retryable", 503), ("sent", 200)]
    assert [(a.outcome, a.error_code) for a in timed_out] == [
        ("retryable", "timeout"),
        (
            "sent",
            None,
        ),
    ]
    # Retry-After is a floor on the next attempt (the schedule alone says 0.05 s).
    arrivals = [r.arrived_at for r in fake.requests if r.recipient == "1555000429"]
    assert len(arrivals) == 2
    assert arrivals[1] - arrivals[0] >= 0.3 - 0.01
    # The throttle was persisted on the channel lease for whoever owns the channel next.
    async with resources.sessionmaker() as session:
        lease = await session.get(ChannelLease, channel)
    assert lease is not None
    assert lease.throttled_until is not None

    events = await staged_events(resources)
    retrying = [e for e in events if e["type"] == "message.retrying"]
    assert len(retrying) == 3
    assert {e["data"]["error"]["code"] for e in retrying} >= {"timeout"}
    assert all(e["data"]["error"]["retryable"] for e in retrying)


async def test_a_throttle_pauses_the_whole_channel(
    resources: Resources, fake: FakePlatformServer
) -> None:
    channel = await make_channel(resources, fake, rate=20)
    fake.inject(Fault.rate_limited(retry_after=0.5, recipient="15556000"))
    ids = await enqueue(resources, channel, [f"155560{i:02d}" for i in range(8)])
    async with running(resources):
        await all_done(resources, ids)
    assert {m.state for m in (await states(resources, ids)).values()} == {"sent"}
    (throttled_at,) = [r.arrived_at for r in fake.requests if r.status == 429]
    # sends granted before the 429 came back may land just after it; nothing else does
    paused = [r for r in fake.requests if throttled_at + 0.05 < r.arrived_at < throttled_at + 0.5]
    assert paused == []


async def test_permanent_error_fails_at_once(
    resources: Resources, fake: FakePlatformServer
) -> None:
    channel = await make_channel(resources, fake)
    fake.inject(Fault.platform_error(131026, "Message undeliverable", times=None))
    (mid,) = await enqueue(resources, channel, ["15550009"])
    async with running(resources):
        await all_done(resources, [mid])
    row = (await states(resources, [mid]))[mid]
    assert (row.state, row.attempts) == ("failed", 1)
    assert row.finished_at is not None
    assert row.last_error is not None
    assert row.last_error["code"] == "131026"
    assert len(fake.requests) == 1
    assert [e["type"] for e in await staged_events(resources)] == ["message.failed"]


async def test_exhausted_before_not_after_is_dead_and_expired_rows_are_never_sent(
    resources: Resources, fake: FakePlatformServer
) -> None:
    channel = await make_channel(resources, fake)
    fake.inject(Fault.server_error(500, recipient="15550500", times=None))
    (failing,) = await enqueue(
        resources, channel, ["15550500"], not_after=timedelta(seconds=2), tag="f"
    )
    (expired,) = await enqueue(
        resources, channel, ["15550600"], not_after=timedelta(seconds=-1), tag="x"
    )
    async with running(resources):
        await all_done(resources, [failing, expired])
    rows = await states(resources, [failing, expired])
    assert rows[failing].state == "dead"
    assert rows[failing].attempts >= 2
    assert len(await attempts_of(resources, failing)) == rows[failing].attempts
    assert rows[expired].state == "dead"
    assert rows[expired].attempts == 0
    assert (rows[expired].last_error or {}).get("code") == "expired"
    assert not [r for r in fake.requests if r.recipient == "15550600"]
    types = Counter(e["type"] for e in await staged_events(resources))
    assert types["message.dead"] == 2
    # Either the last attempt saw no retry left before not_after (dead with the 500), or its
    # retry was due just before not_after and the sweep found it expired (one more retrying).
    failing_code = (rows[failing].last_error or {}).get("code")
    assert failing_code in {"500", "expired"}
    swept = failing_code == "expired"
    assert types["message.retrying"] == rows[failing].attempts - (0 if swept else 1)


async def test_a_channel_whose_secrets_cannot_be_decrypted_does_not_stop_the_others(
    resources: Resources, fake: FakePlatformServer
) -> None:
    broken = await make_channel(resources, fake)
    async with resources.sessionmaker() as session, session.begin():
        row = await session.get(Channel, broken)
        assert row is not None
        row.secrets = foreign_secrets()
    healthy = [await make_channel(resources, fake) for _ in range(3)]  # granted after it
    stuck = await enqueue(resources, broken, ["15550801"], tag="b")
    ids: list[uuid.UUID] = []
    for n, channel in enumerate(healthy):
        ids += await enqueue(resources, channel, [f"1555081{n}"], tag=f"h{n}")
    async with running(resources):
        await all_done(resources, ids)

        async def released() -> bool:  # not held on to (renewed): another worker may load it
            async with resources.sessionmaker() as session:
                lease = await session.get(ChannelLease, broken, populate_existing=True)
                db_now = await session.scalar(select(func.now()))
            assert db_now is not None
            return lease is None or lease.expires_at <= db_now + timedelta(seconds=1.5)

        await eventually(released)
        await asyncio.sleep(0.5)  # several ownership rounds: still not taken back
        assert await released()
    assert {m.state for m in (await states(resources, ids)).values()} == {"sent"}
    assert (await states(resources, stuck))[stuck[0]].state == "queued"
    assert not [r for r in fake.requests if r.recipient == "15550801"]


async def test_a_held_channel_keeps_sending_when_its_reloaded_secrets_fail(
    resources: Resources, fake: FakePlatformServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("outbox.ownership._CHANNEL_REFRESH", 0.0)  # reload every round
    channel = await make_channel(resources, fake, rate=2)  # busy longer than the channel lease
    ids = await enqueue(resources, channel, [f"1555090{i}" for i in range(9)])
    async with running(resources):
        await eventually(lambda: asyncio.sleep(0, len(fake.requests) >= 1))
        async with resources.sessionmaker() as session, session.begin():
            row = await session.get(Channel, channel)
            assert row is not None
            row.secrets = foreign_secrets()
        await all_done(resources, ids)  # with the settings it had loaded
    assert {m.state for m in (await states(resources, ids)).values()} == {"sent"}
    assert len(fake.requests) == len(ids)


async def test_a_rate_reset_after_a_tiny_rate_lets_the_channel_send_again(
    resources: Resources, fake: FakePlatformServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 9, D8: a rate of 1e-300 (stored before the API bounded it) must not stall the
    channel once the rate is reset."""
    monkeypatch.setattr("outbox.ownership._CHANNEL_REFRESH", 0.0)  # reload every round
    channel = await make_channel(resources, fake, rate=1e-300)
    ids = await enqueue(resources, channel, ["15550961", "15550962", "15550963"])
    async with running(resources):
        await eventually(lambda: asyncio.sleep(0, len(fake.requests) >= 1))
        async with resources.sessionmaker() as session, session.begin():
            row = await session.get(Channel, channel)
            assert row is not None
            row.send_rate_per_second = None  # back to the platform default
        await all_done(resources, ids)
    assert {m.state for m in (await states(resources, ids)).values()} == {"sent"}


def crash_on_write(worker: DeliveryWorker, poison: uuid.UUID) -> None:
    """Fault injection: writing the outcome of ``poison`` raises, as a bug in our code would."""
    write = worker.writer.write

    async def crashing(batch: list[Any]) -> None:
        if any(outcome.claim.message.id == poison for outcome in batch):
            raise RuntimeError("injected: outcome cannot be written")
        await write(batch)

    worker.writer.write = crashing  # type: ignore[method-assign]


async def test_an_outcome_that_cannot_be_written_does_not_hold_up_the_others(
    resources: Resources, fake: FakePlatformServer
) -> None:
    channel = await make_channel(resources, fake)
    ids = await enqueue(resources, channel, [f"1555070{i}" for i in range(6)])
    # A lease longer than the test: with the file's 4 s one, a slow run outlived it and the
    # worker recovered the crashed claim (retrying) before the others were done.
    held = resources.settings.model_copy(update={"outbox_message_lease": 300.0})
    worker = DeliveryWorker(dataclasses.replace(resources, settings=held), owner="w1")
    crash_on_write(worker, ids[2])
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        others = [i for i in ids if i != ids[2]]
        await all_done(resources, others)
    finally:
        stop.set()
        await task
    rows = await states(resources, ids)
    assert {rows[i].state for i in others} == {"sent"}
    assert rows[ids[2]].state == "sending", "left to its lease, recovered after expiry"


@contextlib.asynccontextmanager
async def first_event_commit_fails(engine: AsyncEngine) -> AsyncIterator[None]:
    """The first transaction that stages a lifecycle event fails at COMMIT, as PostgreSQL
    reports it (a serialization failure from a deferred trigger; the sequence that counts the
    tries is not rolled back with it). The ones after it commit."""
    statements = [
        "CREATE SEQUENCE t_commit_tries",
        """CREATE FUNCTION t_fail_first_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF nextval('t_commit_tries') = 1 THEN
                RAISE EXCEPTION 'injected: commit fails' USING ERRCODE = '40001';
            END IF;
            RETURN NULL;
        END $$""",
        """CREATE CONSTRAINT TRIGGER t_fail_first_commit AFTER INSERT ON outbox_events
        DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION t_fail_first_commit()""",
    ]
    async with engine.begin() as conn:
        for statement in statements:
            await conn.execute(text(statement))
    try:
        yield
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("DROP TRIGGER t_fail_first_commit ON outbox_events"))
            await conn.execute(text("DROP FUNCTION t_fail_first_commit()"))
            await conn.execute(text("DROP SEQUENCE t_commit_tries"))


async def test_a_retried_outcome_write_counts_the_attempt_once(
    resources: Resources, fake: FakePlatformServer, engine: AsyncEngine
) -> None:
    channel = await make_channel(resources, fake)
    fake.inject(Fault.server_error(503, recipient="15550950", times=1))
    (mid,) = await enqueue(resources, channel, ["15550950"])
    async with first_event_commit_fails(engine):
        async with running(resources):
            await all_done(resources, [mid])
        async with engine.connect() as conn:
            tries = await conn.scalar(text("SELECT last_value FROM t_commit_tries"))
    assert tries == 3, "the first write failed at COMMIT, was retried, then one more"
    row = (await states(resources, [mid]))[mid]
    assert (row.state, row.attempts) == ("sent", 2)
    history = await attempts_of(resources, mid)
    assert [(a.attempt, a.outcome) for a in history] == [(1, "retryable"), (2, "sent")]
    events = await staged_events(resources)
    assert [(e["type"], e["data"]["attempt"]) for e in events] == [
        ("message.retrying", 1),
        ("message.sent", 2),
    ]


async def test_conversation_order_holds_under_retries(
    resources: Resources, fake: FakePlatformServer
) -> None:
    channel = await make_channel(resources, fake)
    fake.inject(Fault.server_error(503, path_contains="/messages", recipient="15557777", times=2))
    ids = await enqueue(resources, channel, ["15557777"] * 6 + ["15558888"] * 3)
    async with running(resources):
        await all_done(resources, ids)
    rows = await states(resources, ids)
    assert {m.state for m in rows.values()} == {"sent"}
    first = [r for r in fake.requests if r.recipient == "15557777"]
    assert [(text_of(r), r.status) for r in first] == [
        ("m0", 503),
        ("m0", 503),
        ("m0", 200),
        ("m1", 200),
        ("m2", 200),
        ("m3", 200),
        ("m4", 200),
        ("m5", 200),
    ]
    other = [text_of(r) for r in fake.requests if r.recipient == "15558888"]
    assert other == ["m6", "m7", "m8"]
    # the other conversation did not wait for the retries of the first one
    other_sent, first_sent = rows[ids[6]].sent_at, rows[ids[0]].sent_at
    assert other_sent is not None
    assert first_sent is not None
    assert other_sent < first_sent


# ---- events on the topic -----------------------------------------------------------------------


async def test_every_transition_reaches_the_topic_once(
    resources: Resources, fake: FakePlatformServer
) -> None:
    channel = await make_channel(resources, fake)
    fake.inject(Fault.server_error(502, recipient="15550001", times=1))
    fake.inject(Fault.platform_error(131026, recipient="15550002", times=1))
    ids = await enqueue(resources, channel, ["15550001", "15550002", "15550003"])
    stop = asyncio.Event()
    task = asyncio.create_task(run_worker(resources, stop))
    try:
        await all_done(resources, ids)
    finally:
        stop.set()
        await task
    expected = [
        (str(ids[0]), "message.retrying", 1),
        (str(ids[0]), "message.sent", 2),
        (str(ids[1]), "message.failed", 1),
        (str(ids[2]), "message.sent", 1),
    ]
    consumer = kafka.create_consumer(
        resources.settings,
        resources.settings.topic("outbound.events.v1"),
        group_id=f"t-{uuid.uuid4().hex}",
    )
    await consumer.start()
    got: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(15):
            while len(got) < len(expected):
                batch = await consumer.getmany(timeout_ms=300)
                got += [orjson.loads(r.value) for rs in batch.values() for r in rs]
        got += [  # anything beyond the expected ones would be a duplicate
            orjson.loads(r.value)
            for rs in (await consumer.getmany(timeout_ms=500)).values()
            for r in rs
        ]
    finally:
        await consumer.stop()
    seen = [(e["data"]["message_id"], e["type"], e["data"]["attempt"]) for e in got]
    assert sorted(seen) == sorted(expected)
    assert len({e["id"] for e in got}) == len(got)
    async with resources.sessionmaker() as session:
        unpublished = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
        )
    assert unpublished == 0


# ---- shutdown ----------------------------------------------------------------------------------


async def test_stop_lets_in_flight_sends_finish_and_releases_the_rest(
    resources: Resources, fake: FakePlatformServer
) -> None:
    channel = await make_channel(resources, fake, rate=2)  # most claims wait for the pacer
    fake.inject(Fault.slow(0.5, times=None))
    ids = await enqueue(resources, channel, [f"1555100{i:02d}" for i in range(8)])
    stop = asyncio.Event()
    worker = DeliveryWorker(resources, owner="w1")
    task = asyncio.create_task(worker.run(stop))
    await eventually(lambda: asyncio.sleep(0, len(fake.requests) >= 1))
    stop.set()
    await task
    rows = await states(resources, ids)
    by_state = Counter(m.state for m in rows.values())
    assert by_state["sending"] == 0
    assert by_state["sent"] == len(fake.requests) >= 1, "what went on the wire was recorded"
    assert by_state["sent"] + by_state["queued"] == len(ids)
    assert all(m.lease_owner is None for m in rows.values())
    assert all(m.attempts == 0 for m in rows.values() if m.state == "queued")
    assert worker.stats.released == worker.stats.claimed - by_state["sent"] > 0
    async with resources.sessionmaker() as session:
        lease = await session.get(ChannelLease, channel)
        db_now = await session.scalar(select(func.now()))
    assert lease is not None
    assert lease.expires_at <= db_now + timedelta(seconds=1.5)  # type: ignore[operator]

    # a second worker picks the released messages up after the handover gap
    async with running(resources, owner="w2"):
        await all_done(resources, ids)
    assert {m.state for m in (await states(resources, ids)).values()} == {"sent"}
    assert Counter(text_of(r) for r in fake.requests).most_common(1)[0][1] == 1


async def test_stop_while_postgresql_stalls_returns_within_the_shutdown_deadline(
    settings: Settings, engine: AsyncEngine, fake: FakePlatformServer
) -> None:
    url = make_url(settings.database_url.get_secret_value())
    proxy = StallingProxy(url.host or "127.0.0.1", url.port or 5432)
    port = await proxy.start()
    proxied = url.set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
    stalled = tune(settings, database_url=type(settings.database_url)(proxied))
    deadline = stalled.outbox_shutdown_deadline
    try:
        async with open_resources(stalled) as res:
            channel = await make_channel(res, fake, rate=2)  # claims keep waiting and coming
            await enqueue(res, channel, [f"1555450{i:02d}" for i in range(12)])
            stop = asyncio.Event()
            worker = DeliveryWorker(res, owner="w1")
            task = asyncio.create_task(worker.run(stop))
            await eventually(lambda: asyncio.sleep(0, len(fake.requests) >= 2))
            proxy.stall()
            await asyncio.sleep(0.5)  # every loop is now waiting on PostgreSQL
            stop.set()
            started = time.monotonic()
            done, _ = await asyncio.wait({task}, timeout=deadline + 5)
            elapsed = time.monotonic() - started
            await proxy.close()  # let the resources (and a run() still waiting) go on
            await task
            assert done, "run() was still waiting on the stalled database"
            assert elapsed < deadline + 2, elapsed
    finally:
        await proxy.close()


# ---- replicas ----------------------------------------------------------------------------------


async def test_two_workers_never_exceed_the_channel_rate_together(
    resources: Resources, fake: FakePlatformServer
) -> None:
    rate = 5
    channel = await make_channel(resources, fake, rate=rate)
    ids = await enqueue(resources, channel, [f"1555200{i:02d}" for i in range(20)])
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    a = DeliveryWorker(resources, owner="a")
    b = DeliveryWorker(resources, owner="b")
    task_a = asyncio.create_task(a.run(stop_a))
    task_b = asyncio.create_task(b.run(stop_b))
    try:
        # hand the channel over mid-way: stop whichever owns it, the other one takes over
        await eventually(lambda: asyncio.sleep(0, len(fake.requests) >= 7))
        owner_stop = stop_a if a.stats.claimed else stop_b
        owner_stop.set()
        await all_done(resources, ids)
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.gather(task_a, task_b)
    assert a.stats.sent > 0, "both workers sent on the channel"
    assert b.stats.sent > 0, "both workers sent on the channel"
    assert a.stats.sent + b.stats.sent == len(ids)
    assert len(fake.requests) == len(ids)
    (starts,) = (await send_starts(resources, ids)).values()
    assert len(starts) == len(ids)
    assert max_in_window(starts) <= rate


async def test_the_handover_gap_counts_from_the_release_not_from_the_round_start(
    resources: Resources, fake: FakePlatformServer
) -> None:
    """Issue 9, D15: the gap was counted from the ownership round's transaction start, while
    the releasing worker went on sending until the round committed, so a slow round shortened
    the gap by its own length. It now counts from the release statement, and the worker stops
    sending on the channel before that statement runs."""
    channel = await make_channel(resources, fake)
    async with resources.sessionmaker() as session, session.begin():
        assert await leases.acquire_channels(session, "a", [channel], 10.0)
    async with resources.sessionmaker() as session, session.begin():
        await session.execute(text("SELECT pg_sleep(0.3)"))  # a slow ownership round
        before = await session.scalar(text("SELECT clock_timestamp()"))
        await leases.release_channels(session, "a", [channel], 1.0)
    async with resources.sessionmaker() as session:
        lease = await session.get(ChannelLease, channel)
    assert lease is not None
    assert lease.expires_at >= before + timedelta(seconds=1.0)


async def live_workers(res: Resources) -> int:
    async with res.sessionmaker() as session:
        count = await session.scalar(
            select(func.count())
            .select_from(OutboxWorker)
            .where(OutboxWorker.expires_at > func.now())
        )
    return int(count or 0)


async def channels_sent_by(res: Resources, ids: Sequence[uuid.UUID]) -> dict[str, set[uuid.UUID]]:
    """Worker → the channels it recorded a sent attempt on."""
    async with res.sessionmaker() as session:
        rows = await session.execute(
            select(OutboxAttempt.worker, OutboxMessage.channel_id)
            .join(OutboxMessage, OutboxMessage.id == OutboxAttempt.message_id)
            .where(OutboxAttempt.outcome == "sent", OutboxMessage.id.in_(ids))
        )
        got: dict[str, set[uuid.UUID]] = {}
        for worker, channel_id in rows.all():
            got.setdefault(worker, set()).add(channel_id)
    return got


async def test_two_workers_spread_the_channels_between_them(
    resources: Resources, fake: FakePlatformServer
) -> None:
    channels = [await make_channel(resources, fake) for _ in range(6)]
    stop = asyncio.Event()
    a = DeliveryWorker(resources, owner="a")
    b = DeliveryWorker(resources, owner="b")
    tasks = [asyncio.create_task(a.run(stop)), asyncio.create_task(b.run(stop))]
    try:
        # both are alive before there is any work: each one's fair share is half the channels
        async def both_alive() -> bool:
            return await live_workers(resources) == 2

        await eventually(both_alive)
        ids: list[uuid.UUID] = []
        for n, channel in enumerate(channels):
            ids += await enqueue(resources, channel, [f"155570{n}{i:02d}" for i in range(5)])
        await all_done(resources, ids)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    assert {m.state for m in (await states(resources, ids)).values()} == {"sent"}
    assert a.stats.sent > 0, "both workers sent"
    assert b.stats.sent > 0, "both workers sent"
    assert a.stats.sent + b.stats.sent == len(fake.requests) == len(ids)
    owned = await channels_sent_by(resources, ids)
    assert set(owned) == {"a", "b"}
    assert owned["a"] | owned["b"] == set(channels)
    assert await live_workers(resources) == 0, "a stopped worker retires its heartbeat"


async def test_a_worker_that_joins_gets_channels_from_the_busy_one_without_breaking_rates(
    resources: Resources, fake: FakePlatformServer
) -> None:
    rate = 4
    channels = [await make_channel(resources, fake, rate=rate) for _ in range(4)]
    ids: list[uuid.UUID] = []
    for n, channel in enumerate(channels):
        ids += await enqueue(resources, channel, [f"155580{n}{i:02d}" for i in range(16)])
    stop = asyncio.Event()
    a = DeliveryWorker(resources, owner="a")
    b = DeliveryWorker(resources, owner="b")
    task_a = asyncio.create_task(a.run(stop))
    task_b: asyncio.Task[None] | None = None
    try:
        # a alone owns every channel; b joins while there is plenty left to send
        await eventually(lambda: asyncio.sleep(0, len(fake.requests) >= len(channels)))
        task_b = asyncio.create_task(b.run(stop))
        await all_done(resources, ids)
    finally:
        stop.set()
        await asyncio.gather(task_a, *([task_b] if task_b else []))
    assert {m.state for m in (await states(resources, ids)).values()} == {"sent"}
    assert b.stats.sent > 0, "the new worker took over some channels"
    assert a.stats.sent + b.stats.sent == len(fake.requests) == len(ids)
    starts = await send_starts(resources, ids)
    assert sum(len(v) for v in starts.values()) == len(ids)
    for channel in channels:  # the handover gap keeps each channel within its rate
        assert max_in_window(starts[channel]) <= rate


def _worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    env.update(
        {
            "SWITCHBOARD_DATABASE_URL": settings.database_url.get_secret_value(),
            "SWITCHBOARD_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "SWITCHBOARD_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
            "SWITCHBOARD_KAFKA_ENABLE_IDEMPOTENCE": "false",
            "SWITCHBOARD_KAFKA_CONSUMER_GROUP": f"crash-{uuid.uuid4().hex[:8]}",
            "SWITCHBOARD_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value()
            if settings.encryption_keys
            else "",
            "SWITCHBOARD_LOG_LEVEL": "WARNING",
            "SWITCHBOARD_ALLOW_API_BASE_URL_OVERRIDE": "true",  # the fake platform on loopback
            **extra,
        }
    )
    return env


async def test_a_worker_killed_mid_batch_loses_nothing_and_duplicates_are_bounded(
    resources: Resources, fake: FakePlatformServer, tmp_path: Path
) -> None:
    in_flight = 6
    channel = await make_channel(resources, fake)
    fake.inject(Fault.slow(0.6, times=None))
    ids = await enqueue(resources, channel, [f"1555300{i:02d}" for i in range(30)])
    env = _worker_env(
        resources.settings,
        SWITCHBOARD_OUTBOX_MAX_IN_FLIGHT=str(in_flight),
        SWITCHBOARD_OUTBOX_HTTP_TIMEOUT="2",
        SWITCHBOARD_OUTBOX_MESSAGE_LEASE="4",
        SWITCHBOARD_OUTBOX_CHANNEL_LEASE="2",
        SWITCHBOARD_OUTBOX_CHANNEL_RENEW_INTERVAL="0.2",
        SWITCHBOARD_OUTBOX_POLL_INTERVAL="0.02",
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("switchboard")),
            "outbox",
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=sink,
        )
        try:
            # killed while sends are on the wire and more claims wait (after one batch at least)
            await eventually(lambda: asyncio.sleep(0, len(fake.requests) >= in_flight + 2))
        finally:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
    killed_at = len(fake.requests)
    stuck = Counter(m.state for m in (await states(resources, ids)).values())
    assert stuck["sending"] >= 1, "the dead worker left claimed rows behind"

    async with running(resources, owner="survivor") as survivor:
        await all_done(resources, ids)
    rows = await states(resources, ids)
    assert {m.state for m in rows.values()} == {"sent"}
    per_message = Counter(text_of(r) for r in fake.requests)
    assert set(per_message) == {f"m{i}" for i in range(len(ids))}
    duplicates = sum(n - 1 for n in per_message.values())
    assert duplicates <= in_flight, "only what was in flight at the kill may be sent twice"
    assert survivor.stats.recovered == stuck["sending"]
    assert killed_at >= in_flight
    lost = [a for i in ids for a in await attempts_of(resources, i) if a.outcome == "lost"]
    assert len(lost) == stuck["sending"]


async def test_sigterm_drains_and_the_process_exits_0(
    resources: Resources, fake: FakePlatformServer, tmp_path: Path
) -> None:
    channel = await make_channel(resources, fake, rate=2)  # most claims wait for the pacer
    fake.inject(Fault.slow(0.8, times=None))
    ids = await enqueue(resources, channel, [f"1555400{i:02d}" for i in range(8)])
    env = _worker_env(
        resources.settings,
        SWITCHBOARD_OUTBOX_CHANNEL_RENEW_INTERVAL="0.2",
        SWITCHBOARD_OUTBOX_POLL_INTERVAL="0.02",
    )
    log = tmp_path / "worker.log"
    with log.open("wb") as sink:
        proc = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).with_name("switchboard")),
            "outbox",
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=sink,
        )
        try:
            await eventually(lambda: asyncio.sleep(0, len(fake.requests) >= 1))
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(20):
                code = await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert code == 0, log.read_text()[-2000:]
    rows = await states(resources, ids)
    by_state = Counter(m.state for m in rows.values())
    assert by_state["sending"] == 0
    assert by_state["sent"] == len(fake.requests), "every request on the wire was recorded"
    assert by_state["sent"] + by_state["queued"] == len(ids)
    assert by_state["queued"] > 0
    assert all(m.lease_owner is None for m in rows.values())
    async with resources.sessionmaker() as session:
        unpublished = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.published_at.is_(None))
        )
    assert unpublished == 0, "the relay published what the drain staged before exiting"


# ---- signals ahead of the queue ----------------------------------------------------------------


async def test_a_read_mark_jumps_a_waiting_conversation_and_holds_back_nothing(
    settings: Settings, engine: AsyncEngine, fake: FakePlatformServer
) -> None:
    """Signals (typing, mark_read, callback_answer) are useless late: a read mark is sent while
    an earlier message of its conversation waits for a retry, and a message queued after the
    signal still waits for that earlier one (FIFO among messages is kept)."""
    async with open_resources(tune(settings, outbox_retry_schedule=(60.0,))) as res:
        channel = await make_channel(res, fake)
        fake.inject(Fault.server_error(503, path_contains="/messages", recipient="15556666"))
        [first] = await enqueue(res, channel, ["15556666"], tag="first")
        async with running(res):

            async def first_waits() -> bool:
                return (await states(res, [first]))[first].state == "retrying"

            await eventually(first_waits)
            now = datetime.now(UTC)
            async with res.sessionmaker() as session, session.begin():
                signal = OutboxMessage(
                    command_id=f"cmd-{uuid.uuid4().hex}",
                    request_hash="0" * 64,
                    source="api",
                    channel_id=channel,
                    platform="whatsapp",
                    recipient="15556666",
                    conversation_key=f"{channel}:15556666",
                    content={"kind": "mark_read", "mark_read": {"message_id": "wamid.customer"}},
                    message_metadata={},
                    state="queued",
                    next_attempt_at=now,
                    not_after=now + timedelta(seconds=30),
                )
                session.add(signal)
            [after] = await enqueue(res, channel, ["15556666"], tag="after")
            await all_done(res, [signal.id])
            rows = await states(res, [first, signal.id, after])
        assert rows[signal.id].state == "sent"
        assert rows[first].state == "retrying"
        assert rows[after].state == "queued"
        read_marks = [r for r in fake.requests if r.json and r.json.get("status") == "read"]
        assert [r.json["message_id"] for r in read_marks] == ["wamid.customer"]


async def test_sends_are_counted_and_timed_per_platform_and_outcome(
    resources: Resources, fake: FakePlatformServer
) -> None:
    value = REGISTRY.get_sample_value
    sent = {"platform": "whatsapp", "outcome": "sent"}
    retryable = {"platform": "whatsapp", "outcome": "retryable"}
    before_sent = value("switchboard_outbox_sends_total", sent) or 0
    before_retryable = value("switchboard_outbox_sends_total", retryable) or 0
    timed = value("switchboard_outbox_send_duration_seconds_count", {"platform": "whatsapp"}) or 0
    channel = await make_channel(resources, fake)
    fake.inject(Fault.server_error(503, path_contains="/messages", recipient="15554444", times=1))
    ids = await enqueue(resources, channel, ["15554444", "15553333", "15552222"])
    async with running(resources):
        await all_done(resources, ids)
    assert value("switchboard_outbox_sends_total", sent) == before_sent + 3
    assert value("switchboard_outbox_sends_total", retryable) == before_retryable + 1
    assert value("switchboard_outbox_send_duration_seconds_count", {"platform": "whatsapp"}) == (
        timed + 4
    )
