"""Receipts from the inbound topic: states only move forward whatever the order, one event per
transition; inbound messages open the WhatsApp window; a receipt that arrives before its
message's platform id is recorded is held and applied once the worker records it."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from channels.models import Channel
from fake_platforms.server import FakePlatformServer
from infra.resources import Resources, open_resources
from infra.settings import Settings
from outbox import receipts as receipts_module
from outbox.models import ConversationWindow, OutboxEvent, OutboxMessage, PendingReceipt
from outbox.receipts_consumer import run_receipts_consumer
from tests.integration.outbox.test_worker import enqueue, eventually, make_channel, running, tune

pytestmark = pytest.mark.integration

ACCOUNT = "106540352242922"
USER = "393331234567"


def rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def inbound(
    channel_id: str,
    event_type: str,
    *,
    contact: str = USER,
    status: dict[str, Any] | None = None,
    message: dict[str, Any] | None = None,
    when: datetime | None = None,
) -> bytes:
    conversation = f"whatsapp:{ACCOUNT}:{contact}"
    return orjson.dumps(
        {
            "specversion": "1.0",
            "id": str(uuid.uuid4()),
            "source": f"/switchboard/whatsapp/{channel_id}",
            "type": event_type,
            "time": rfc3339(when or datetime.now(UTC)),
            "subject": conversation,
            "datacontenttype": "application/json",
            "data": {
                "platform": "whatsapp",
                "channel_id": channel_id,
                "account_id": ACCOUNT,
                "conversation_id": conversation,
                "contact": {"id": contact, "name": None, "phone": None, "username": None},
                "message": message,
                "status": status,
                "raw": None,
            },
        }
    )


def status(channel_id: str, wamid: str, state: str, **error: str) -> bytes:
    body: dict[str, Any] = {"message_id": wamid, "state": state, "recipient_id": USER}
    body["error"] = error or None
    return inbound(channel_id, "message.status", status=body)


def received(channel_id: str, contact: str, when: datetime, *, echo: bool = False) -> bytes:
    message = {"id": f"wamid.in.{uuid.uuid4().hex}", "kind": "text", "text": "hi", "echo": echo}
    return inbound(channel_id, "message.received", contact=contact, message=message, when=when)


@pytest.fixture
async def resources(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Resources]:
    settings = settings.model_copy(update={"kafka_consumer_group": f"o-{uuid.uuid4().hex[:8]}"})
    async with open_resources(settings) as res:
        yield res


async def seed(res: Resources) -> tuple[str, dict[str, uuid.UUID]]:
    now = datetime.now(UTC)
    async with res.sessionmaker() as session, session.begin():
        channel = Channel(
            platform="whatsapp",
            name="wa",
            account_id=ACCOUNT,
            secrets=res.secret_box.encrypt_json({"access_token": "t"}),
        )
        session.add(channel)
        await session.flush()
        ids: dict[str, uuid.UUID] = {}
        for name, state, wamid in [
            ("read_first", "sent", "wamid.1"),
            ("fails", "sent", "wamid.2"),
            ("pending", "retrying", None),
        ]:
            message = OutboxMessage(
                command_id=name,
                request_hash="0" * 64,
                source="api",
                channel_id=channel.id,
                platform="whatsapp",
                recipient=USER,
                conversation_key=f"{channel.id}:{USER}",
                content={"kind": "text", "text": "x"},
                message_metadata={"n": name},
                state=state,
                attempts=1,
                next_attempt_at=now,
                not_after=now + timedelta(hours=1),
                platform_message_id=wamid,
            )
            session.add(message)
            await session.flush()
            ids[name] = message.id
        return str(channel.id), ids


async def consume_until_sentinel(res: Resources, channel_id: str, records: list[bytes]) -> None:
    """Publish ``records`` then a sentinel window record on one partition, and run the receipts
    consumer until it has handled the sentinel (so every record before it is handled too)."""
    topic = res.settings.topic("inbound.v1")
    for value in [*records, received(channel_id, "sentinel", datetime.now(UTC))]:
        await res.producer.send_and_wait(topic, value, key=b"whatsapp:conversation")
    stop = asyncio.Event()
    task = asyncio.create_task(run_receipts_consumer(res, stop))
    try:
        async with asyncio.timeout(30):
            while True:
                async with res.sessionmaker() as session:
                    done = await session.get(ConversationWindow, f"{channel_id}:sentinel")
                if done is not None:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task


async def held_receipts(res: Resources) -> list[tuple[str, str]]:
    async with res.sessionmaker() as session:
        rows = await session.scalars(select(PendingReceipt).order_by(PendingReceipt.id))
        return [(r.platform_message_id, r.state) for r in rows]


async def test_receipts_move_forward_only_and_windows_open(resources: Resources) -> None:
    res = resources
    channel_id, _ = await seed(res)
    other_channel = str(uuid.uuid4())
    now = datetime.now(UTC)
    topic = res.settings.topic("inbound.v1")
    records = [
        status(channel_id, "wamid.1", "read"),  # overtakes its delivered
        status(channel_id, "wamid.1", "delivered"),  # after read: nothing
        status(channel_id, "wamid.1", "failed", code="131000", title="late"),  # after read
        status(channel_id, "wamid.2", "delivered"),
        status(channel_id, "wamid.2", "delivered"),  # duplicate: nothing
        status(other_channel, "wamid.2", "read"),  # another channel's id: not ours
        status(channel_id, "wamid.2", "failed", code="131026", title="Message undeliverable"),
        status(channel_id, "wamid.2", "read"),  # after failed: nothing
        status(channel_id, "wamid.unknown", "delivered"),  # unmatched: logged, skipped
        b"definitely not a canonical event",
        received(channel_id, USER, now - timedelta(hours=2)),
        received(channel_id, USER, now - timedelta(hours=5)),  # older: never moves back
        received(channel_id, "393330000000", now, echo=True),  # our own echo: no window
        received(channel_id, "sentinel", now),
    ]
    for value in records:  # one key, one partition: the order above is the order consumed
        await res.producer.send_and_wait(topic, value, key=b"whatsapp:conversation")

    stop = asyncio.Event()
    task = asyncio.create_task(run_receipts_consumer(res, stop))
    try:
        async with asyncio.timeout(30):
            while True:
                async with res.sessionmaker() as session:
                    done = await session.get(ConversationWindow, f"{channel_id}:sentinel")
                if done is not None:
                    break
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task

    async with res.sessionmaker() as session:
        rows = {
            m.command_id: m
            for m in await session.scalars(select(OutboxMessage).order_by(OutboxMessage.seq))
        }
        events = [
            orjson.loads(e.value)
            for e in await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))
        ]
        windows = {
            w.conversation_key: w.last_inbound_at
            for w in await session.scalars(select(ConversationWindow))
        }
    assert rows["read_first"].state == "read"
    assert rows["fails"].state == "failed"
    assert rows["fails"].last_error is not None
    assert rows["fails"].last_error["code"] == "131026"
    assert rows["fails"].finished_at is not None
    assert rows["pending"].state == "retrying"
    assert [(e["data"]["command_id"], e["type"]) for e in events] == [
        ("read_first", "message.read"),
        ("fails", "message.delivered"),
        ("fails", "message.failed"),
    ]
    assert events[2]["data"]["error"] == {
        "code": "131026",
        "title": "Message undeliverable",
        "retryable": False,
    }
    assert events[0]["data"]["platform_message_id"] == "wamid.1"
    assert events[0]["data"]["metadata"] == {"n": "read_first"}
    assert abs(windows[f"{channel_id}:{USER}"] - (now - timedelta(hours=2))) < timedelta(seconds=1)
    assert f"{channel_id}:393330000000" not in windows
    # the unmatched receipt is held for its message; another channel's is not ours to hold
    assert await held_receipts(res) == [("wamid.unknown", "delivered")]


async def test_a_receipt_that_cannot_be_stored_does_not_stop_the_others(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One batch, one transaction: a status whose id cannot be stored (over 300 characters,
    NUL) or that fails in the database used to fail the batch forever, stopping the windows
    and receipts of the whole partition. Now it alone is skipped."""
    res = resources
    channel_id, _ = await seed(res)
    now = datetime.now(UTC)
    real_apply = receipts_module.apply_status

    async def apply_or_fail(session: AsyncSession, settings: Settings, event: Any) -> Any:
        transition = await real_apply(session, settings, event)
        if event.data.status.recipient_id == "poison":  # a data error after a change
            await session.execute(text("SELECT CAST('x' AS integer)"))
        return transition

    monkeypatch.setattr(receipts_module, "apply_status", apply_or_fail)
    poison = orjson.loads(status(channel_id, "wamid.1", "delivered"))
    poison["data"]["status"]["recipient_id"] = "poison"
    not_an_instant = orjson.loads(received(channel_id, "393330000001", now))
    not_an_instant["time"] = "2026-13-45T00:00:00Z"  # matches the pattern, is no instant
    await consume_until_sentinel(
        res,
        channel_id,
        [
            status(channel_id, "wamid." + "A" * 300, "delivered"),  # longer than the column
            status(channel_id, "wamid.nul\u0000x", "delivered"),  # PostgreSQL cannot hold NUL
            orjson.dumps(poison),  # rolled back alone (its savepoint)
            received(channel_id, "9" * 300, now),  # window key longer than the column
            orjson.dumps(not_an_instant),
            received(channel_id, USER, now - timedelta(hours=1)),  # opens the window
            status(channel_id, "wamid.1", "read"),
            status(channel_id, "wamid.2", "failed", code="131026", title="bad\u0000title"),
        ],
    )

    async with res.sessionmaker() as session:
        rows = {m.command_id: m for m in await session.scalars(select(OutboxMessage))}
        events = [
            orjson.loads(e.value)
            for e in await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))
        ]
        windows = {w.conversation_key for w in await session.scalars(select(ConversationWindow))}
    assert rows["read_first"].state == "read"
    assert rows["fails"].state == "failed"
    assert rows["fails"].last_error is not None
    assert rows["fails"].last_error["title"] == "badtitle"  # NUL dropped: jsonb cannot hold it
    assert [(e["data"]["command_id"], e["type"]) for e in events] == [
        ("read_first", "message.read"),  # not message.delivered: the poison was rolled back
        ("fails", "message.failed"),
    ]
    assert windows == {f"{channel_id}:{USER}", f"{channel_id}:sentinel"}
    assert await held_receipts(res) == []


async def test_a_window_that_cannot_be_stored_does_not_stop_the_others(
    resources: Resources, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The windows go in one upsert; if it fails on a value, each goes in its own savepoint."""
    res = resources
    channel_id, _ = await seed(res)
    real_updates = receipts_module.window_updates

    def with_an_unstorable_key(received: Any) -> dict[str, datetime]:
        return {**real_updates(received), "bad\u0000key": datetime.now(UTC)}  # past the checks

    monkeypatch.setattr(receipts_module, "window_updates", with_an_unstorable_key)
    await consume_until_sentinel(res, channel_id, [received(channel_id, USER, datetime.now(UTC))])
    async with res.sessionmaker() as session:
        windows = {w.conversation_key for w in await session.scalars(select(ConversationWindow))}
    assert windows == {f"{channel_id}:{USER}", f"{channel_id}:sentinel"}


def fake_wamid(n: int) -> str:
    """The id the fake server answers its ``n``-th WhatsApp send with (1-based)."""
    return f"wamid.HBgL{n:020d}FQIAERgS"


async def test_receipts_that_arrive_before_the_send_is_recorded_are_applied_once(
    settings: Settings, engine: AsyncEngine
) -> None:
    """The platform's webhooks overtake the worker's outcome write: the receipts are consumed
    while the messages are not even sent, then the worker sends and records them."""
    async with (
        FakePlatformServer() as fake,
        open_resources(tune(settings, kafka_consumer_group=f"o-{uuid.uuid4().hex[:8]}")) as res,
    ):
        channel = await make_channel(res, fake)
        # one conversation: sent in order, so message i gets the fake's (i + 1)-th id
        ids = await enqueue(res, channel, [USER] * 4)
        wamids = [fake_wamid(n) for n in range(1, 5)]
        await consume_until_sentinel(
            res,
            str(channel),
            [
                status(str(channel), wamids[0], "delivered"),
                status(str(channel), wamids[0], "read"),
                status(str(channel), wamids[1], "read"),  # read overtakes delivered
                status(str(channel), wamids[1], "delivered"),
                status(str(channel), wamids[2], "failed", code="131026", title="Undeliverable"),
                status(str(channel), wamids[0], "delivered"),  # a duplicate: held once
            ],
        )
        assert len(await held_receipts(res)) == 5
        async with res.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(OutboxEvent)) == 0

        async with running(res) as worker:

            async def settled() -> bool:
                async with res.sessionmaker() as session:
                    rows = await session.scalars(
                        select(OutboxMessage).where(OutboxMessage.id.in_(ids))
                    )
                    got = {m.id: m.state for m in rows}
                return [got[i] for i in ids] == ["read", "read", "failed", "sent"] and not (
                    await held_receipts(res)
                )

            await eventually(settled)
            assert await worker.settle_receipts() == (0, 0), "nothing left to apply twice"

        async with res.sessionmaker() as session:
            rows = {
                m.id: m
                for m in await session.scalars(
                    select(OutboxMessage).where(OutboxMessage.id.in_(ids))
                )
            }
            events = [
                orjson.loads(e.value)
                for e in await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))
            ]
    assert [rows[i].platform_message_id for i in ids] == wamids
    assert rows[ids[2]].last_error is not None
    assert rows[ids[2]].last_error["code"] == "131026"  # type: ignore[index]
    assert rows[ids[2]].finished_at is not None
    by_message = {i: [e["type"] for e in events if e["data"]["message_id"] == str(i)] for i in ids}
    assert by_message == {
        ids[0]: ["message.sent", "message.delivered", "message.read"],
        ids[1]: ["message.sent", "message.read"],
        ids[2]: ["message.sent", "message.failed"],
        ids[3]: ["message.sent"],
    }
    failed = next(e for e in events if e["type"] == "message.failed")
    assert failed["data"]["error"] == {
        "code": "131026",
        "title": "Undeliverable",
        "retryable": False,
    }
    assert failed["data"]["platform_message_id"] == wamids[2]


async def test_a_held_receipt_whose_message_never_appears_expires(
    settings: Settings, engine: AsyncEngine
) -> None:
    async with (
        FakePlatformServer() as fake,
        open_resources(
            tune(
                settings,
                kafka_consumer_group=f"o-{uuid.uuid4().hex[:8]}",
                outbox_pending_receipt_ttl=0.2,
            )
        ) as res,
    ):
        channel = await make_channel(res, fake)
        await consume_until_sentinel(
            res, str(channel), [status(str(channel), "wamid.never", "delivered")]
        )
        assert await held_receipts(res) == [("wamid.never", "delivered")]
        async with running(res):

            async def purged() -> bool:
                return not await held_receipts(res)

            await eventually(purged)
        async with res.sessionmaker() as session:
            assert await session.scalar(select(func.count()).select_from(OutboxEvent)) == 0
