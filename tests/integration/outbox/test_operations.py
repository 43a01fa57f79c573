"""Operations loops on the real PostgreSQL: metrics sampler, retention, one replica at a time."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from channels.models import Channel
from infra.leader import AdvisoryLeader, run_as_leader
from infra.resources import Resources, open_resources
from infra.settings import Settings
from outbox import metrics
from outbox.models import (
    MESSAGE_STATES,
    OutboxAttempt,
    OutboxEvent,
    OutboxMessage,
    PendingReceipt,
)
from outbox.retention import PURGES, purge_once
from outbox.sampler import PENDING, RELAY, Sampler, run_sampler, take_sample

pytestmark = pytest.mark.integration

PENDING_STATES = {"queued", "sending", "retrying"}


@pytest.fixture
async def resources(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Resources]:
    tuned = settings.model_copy(
        update={"outbox_retention_days": 30.0, "outbox_retention_batch_size": 2}
    )
    async with open_resources(tuned) as res:
        yield res


@pytest.fixture
async def conn(resources: Resources) -> AsyncIterator[AsyncConnection]:
    async with resources.engine.connect() as connection:
        yield await connection.execution_options(isolation_level="AUTOCOMMIT")


async def make_channel(res: Resources, *, enabled: bool = True, platform: str = "whatsapp") -> Any:
    async with res.sessionmaker() as session, session.begin():
        channel = Channel(
            platform=platform,
            name="ops",
            account_id=uuid.uuid4().hex,
            secrets=res.secret_box.encrypt_json({"access_token": "t"}),
            enabled=enabled,
        )
        session.add(channel)
        await session.flush()
        return channel.id


async def add_message(
    res: Resources,
    channel_id: Any,
    state: str,
    at: datetime,
    *,
    platform: str = "whatsapp",
    attempts: int = 1,
) -> uuid.UUID:
    async with res.sessionmaker() as session, session.begin():
        message = OutboxMessage(
            command_id=f"cmd-{uuid.uuid4().hex}",
            request_hash="0" * 64,
            source="api",
            channel_id=channel_id,
            platform=platform,
            recipient="15550001",
            conversation_key=f"{channel_id}:15550001",
            content={"kind": "text", "text": "x"},
            state=state,
            next_attempt_at=at,
            not_after=at + timedelta(days=1),
            created_at=at,
            updated_at=at,
        )
        session.add(message)
        await session.flush()
        for n in range(1, attempts + 1):
            session.add(
                OutboxAttempt(
                    message_id=message.id,
                    attempt=n,
                    worker="w",
                    started_at=at,
                    duration_ms=1.0,
                    outcome="sent",
                )
            )
        return message.id


async def add_event(res: Resources, at: datetime, *, published: bool) -> int:
    async with res.sessionmaker() as session, session.begin():
        event = OutboxEvent(
            topic="t",
            key="k",
            value=orjson.dumps({"x": 1}),
            created_at=at,
            published_at=at if published else None,
        )
        session.add(event)
        await session.flush()
        return event.id


async def count(res: Resources, model: Any) -> int:
    async with res.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_retention_deletes_only_old_finished_rows(
    resources: Resources, conn: AsyncConnection
) -> None:
    now = datetime.now(UTC)
    old, recent = now - timedelta(days=40), now - timedelta(days=1)
    channel = await make_channel(resources)
    kept: set[uuid.UUID] = set()
    for state in MESSAGE_STATES:
        old_id = await add_message(resources, channel, state, old, attempts=2)
        if state in PENDING_STATES:
            kept.add(old_id)
        kept.add(await add_message(resources, channel, state, recent, attempts=2))
    old_published = [await add_event(resources, old, published=True) for _ in range(3)]
    kept_events = {
        await add_event(resources, old, published=False),
        await add_event(resources, recent, published=True),
    }
    async with resources.sessionmaker() as session, session.begin():
        for n, expires in enumerate((now - timedelta(minutes=1), now + timedelta(minutes=10))):
            session.add(
                PendingReceipt(
                    channel_id=channel,
                    platform_message_id=f"p{n}",
                    state="read",
                    expires_at=expires,
                )
            )

    deleted = await purge_once(conn, resources.settings, now=now)

    assert deleted == {
        "outbox_messages": len(MESSAGE_STATES) - len(PENDING_STATES),
        "outbox_events": len(old_published),
        "outbox_pending_receipts": 1,
    }
    async with resources.sessionmaker() as session:
        left = {m.id: m.state for m in await session.scalars(select(OutboxMessage))}
        events = set(await session.scalars(select(OutboxEvent.id)))
        attempts = set(await session.scalars(select(OutboxAttempt.message_id)))
        receipts = list(await session.scalars(select(PendingReceipt.platform_message_id)))
    assert set(left) == kept
    assert {s for i, s in left.items() if i in kept} >= PENDING_STATES
    assert attempts == kept, "attempts go with their message, and only with it"
    assert events == kept_events
    assert receipts == ["p1"]
    assert await purge_once(conn, resources.settings, now=now) == {
        "outbox_messages": 0,
        "outbox_events": 0,
        "outbox_pending_receipts": 0,
    }


async def test_repeated_retention_runs_keep_the_tables_bounded(
    resources: Resources, conn: AsyncConnection
) -> None:
    """A soak in simulated days: every day adds finished messages (with attempts and events)
    and a retention run; once the window is full the tables stop growing."""
    settings = resources.settings.model_copy(
        update={"outbox_retention_days": 3.0, "outbox_retention_batch_size": 7}
    )
    channel = await make_channel(resources)
    start = datetime.now(UTC) - timedelta(days=20)
    per_day, sizes = 12, []
    for day in range(12):
        today = start + timedelta(days=day)
        for n in range(per_day):
            at = today + timedelta(minutes=n)
            await add_message(resources, channel, "delivered", at, attempts=2)
            await add_event(resources, at, published=True)
        await purge_once(conn, settings, now=today + timedelta(hours=12))
        sizes.append(
            (
                await count(resources, OutboxMessage),
                await count(resources, OutboxAttempt),
                await count(resources, OutboxEvent),
            )
        )
    window = 4 * per_day  # the days within retention, plus today
    assert all(m <= window and a <= 2 * window and e <= window for m, a, e in sizes), sizes
    assert sizes[-1] == sizes[-2] == sizes[-3], f"still growing: {sizes}"
    assert sizes[-1][0] > 0


async def test_the_sampler_reports_backlog_channels_and_relay_lag(
    resources: Resources, conn: AsyncConnection
) -> None:
    now = datetime.now(UTC)
    channel = await make_channel(resources)
    await make_channel(resources, enabled=False, platform="telegram")
    await add_message(resources, channel, "queued", now - timedelta(seconds=120))
    await add_message(resources, channel, "queued", now - timedelta(seconds=10))
    await add_message(resources, channel, "retrying", now - timedelta(seconds=60))
    await add_message(resources, channel, "sending", now - timedelta(seconds=900))
    await add_message(resources, channel, "delivered", now - timedelta(seconds=3000))
    await add_event(resources, now - timedelta(seconds=45), published=False)
    await add_event(resources, now - timedelta(seconds=5), published=False)
    await add_event(resources, now - timedelta(seconds=500), published=True)

    sample = await take_sample(conn)

    assert sample.pending == {
        ("whatsapp", "queued"): 2,
        ("whatsapp", "retrying"): 1,
        ("whatsapp", "sending"): 1,
    }
    assert 119 <= sample.oldest["whatsapp"] < 3000  # sending rows are not "queued"
    assert sample.channels == {"active": 1, "paused": 0, "suspended": 0, "disabled": 1}
    assert 44 <= sample.relay_lag < 500
    assert sample.unpublished == 2

    sampler = Sampler()
    sampler.publish(sample)
    value = REGISTRY.get_sample_value
    assert value("switchboard_outbox_messages", {"platform": "whatsapp", "state": "queued"}) == 2
    assert value("switchboard_outbox_channels", {"state": "active"}) == 1
    assert value("switchboard_outbox_oldest_queued_seconds", {"platform": "whatsapp"}) >= 119  # type: ignore[operator]
    assert value("switchboard_outbox_relay_lag_seconds") >= 44  # type: ignore[operator]
    sampler.withdraw()
    assert value("switchboard_outbox_messages", {"platform": "whatsapp", "state": "queued"}) is None
    assert value("switchboard_outbox_sampler_leader") == 0


async def test_the_sampler_loop_publishes_while_it_leads(resources: Resources) -> None:
    channel = await make_channel(resources)
    await add_message(resources, channel, "queued", datetime.now(UTC))
    res = Resources(
        settings=resources.settings.model_copy(update={"outbox_metrics_interval": 0.05}),
        engine=resources.engine,
        sessionmaker=resources.sessionmaker,
        producer=resources.producer,
        secret_box=resources.secret_box,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(run_sampler(res, stop))
    labels = {"platform": "whatsapp", "state": "queued"}
    try:
        async with asyncio.timeout(30):
            while REGISTRY.get_sample_value("switchboard_outbox_messages", labels) != 1:  # noqa: ASYNC110 - polling a metric another task sets
                await asyncio.sleep(0.05)
        assert REGISTRY.get_sample_value("switchboard_outbox_sampler_leader") == 1
    finally:
        stop.set()
        await task
    assert REGISTRY.get_sample_value("switchboard_outbox_messages", labels) is None


async def test_one_replica_at_a_time(resources: Resources) -> None:
    first = AdvisoryLeader(resources.engine, 4242, "test")
    second = AdvisoryLeader(resources.engine, 4242, "test")
    try:
        assert await first.hold() is not None
        assert await first.hold() is not None, "the leader keeps its lock"
        assert await second.hold() is None
        await first.release()
        assert await second.hold() is not None
        await second.drop()  # a failed leader: the lock goes with its connection
        assert await first.hold() is not None
    finally:
        await first.release()
        await second.release()


async def test_sampler_and_retention_queries_use_indexes(
    resources: Resources, conn: AsyncConnection
) -> None:
    """On a table of recent history with a few rows past retention and a small backlog (as in
    steady state; analyzed), the statements that run every few seconds or against the whole
    history scan an index, never the table."""
    channel = await make_channel(resources)
    await conn.execute(
        text(
            """
            INSERT INTO outbox_messages (id, command_id, request_hash, source, channel_id,
                platform, recipient, conversation_key, content, metadata, state,
                next_attempt_at, not_after, created_at, updated_at)
            SELECT gen_random_uuid(), 'c' || n, '0', 'api', :channel, 'whatsapp', 'r' || n,
                'k' || n, '{}', '{}', CASE WHEN n % 1000 = 0 THEN 'queued' ELSE 'delivered' END,
                now(), now(), t, t
            FROM generate_series(1, 30000) AS n,
                LATERAL (SELECT CASE WHEN n % 997 = 0 THEN now() - interval '40 days'
                                     ELSE now() - n * interval '1 second' END AS t) AS at
            """
        ),
        {"channel": channel},
    )
    await conn.execute(
        text(
            """
            INSERT INTO outbox_events (topic, key, value, created_at, published_at)
            SELECT 't', 'k', '\\x00', t, CASE WHEN n % 5000 = 0 THEN NULL ELSE t END
            FROM generate_series(1, 30000) AS n,
                LATERAL (SELECT CASE WHEN n < 30 THEN now() - interval '40 days'
                                     ELSE now() - (30000 - n) * interval '1 second' END AS t) AS at
            """
        )
    )
    await conn.execute(text("ANALYZE outbox_messages, outbox_events, outbox_pending_receipts"))
    now = datetime.now(UTC)
    params = {"cutoff": now - timedelta(days=10), "now": now, "batch": 1000}
    expected = {  # the batch is chosen by an index (by created_at), deleted by primary key
        "pending": (PENDING, ("ix_outbox_messages_pending_",)),
        "relay": (RELAY, ("ix_outbox_events_unpublished",)),
        "messages": (
            PURGES["outbox_messages"],
            ("_created on outbox_messages outbox_messages_1", "pk_outbox_messages"),
        ),
        "events": (PURGES["outbox_events"], ("ix_outbox_events_created_at", "pk_outbox_events")),
    }
    for name, (statement, indexes) in expected.items():
        rows = (await conn.execute(text("EXPLAIN " + str(statement)), params)).scalars()
        plan = "\n".join(rows)
        assert all(index in plan for index in indexes), f"{name}: {plan}"
        assert "Seq Scan on outbox" not in plan, f"{name}: {plan}"


def test_record_send_counts_and_times() -> None:
    value = REGISTRY.get_sample_value
    labels = {"platform": "telegram", "outcome": "throttled"}
    before = value("switchboard_outbox_sends_total", labels) or 0
    timed = value("switchboard_outbox_send_duration_seconds_count", {"platform": "telegram"}) or 0
    metrics.record_send("telegram", metrics.send_outcome("retryable", throttled=True), 0.2)
    metrics.record_send("telegram", "expired", 0.0)
    assert value("switchboard_outbox_sends_total", labels) == before + 1
    assert value("switchboard_outbox_send_duration_seconds_count", {"platform": "telegram"}) == (
        timed + 1
    ), "an expired message made no HTTP exchange: no duration"


async def test_a_crashing_round_is_logged_and_the_loop_goes_on(resources: Resources) -> None:
    rounds: list[int] = []
    stop = asyncio.Event()

    async def work(conn: AsyncConnection) -> None:
        rounds.append(1)
        if len(rounds) >= 3:
            stop.set()
        raise ValueError("a bug")

    followers: list[int] = []
    await asyncio.wait_for(
        run_as_leader(
            AdvisoryLeader(resources.engine, 4343, "test"),
            work,
            interval=0.01,
            stop=stop,
            on_follower=lambda: followers.append(1),
        ),
        30,
    )
    assert len(rounds) == 3
    assert len(followers) == 3, "each crash gives the lock up and withdraws"
