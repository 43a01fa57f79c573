"""Channel control end to end: the API (channels, pause/resume, webhooks through the gateway)
and the delivery worker against real PostgreSQL and the fake platform servers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from fake_platforms.server import FakePlatformServer, Fault
from gateway.app import component as gateway_component
from infra import kafka
from infra.settings import Settings
from outbox import control
from outbox.app import component as outbox_component
from outbox.breaker import BreakerPolicy
from outbox.contracts import ChannelError
from outbox.events import run_relay
from outbox.models import OutboxEvent, OutboxMessage
from outbox.sampler import take_sample
from outbox.worker import DeliveryWorker
from tests.conftest import ADMIN_KEY
from tests.integration.gateway.conftest import (
    channel_body,
    meta_headers,
    whatsapp_payload,
)
from tests.integration.outbox.test_worker import (
    all_done,
    attempts_of,
    enqueue,
    eventually,
    running,
    states,
    text_of,
    tune,
)
from tests.support import RunningApp, running_app

pytestmark = pytest.mark.integration

WAITING = frozenset({"queued", "retrying"})


@pytest.fixture
async def fake() -> AsyncIterator[FakePlatformServer]:
    async with FakePlatformServer() as server:
        yield server


@pytest.fixture
async def api(settings: Settings, engine: AsyncEngine) -> AsyncIterator[RunningApp]:
    tuned = tune(settings, gateway_relay_interval_seconds=0.2)
    async with running_app(tuned, [gateway_component(tuned), outbox_component(tuned)]) as app:
        yield app


async def create_channel(
    api: RunningApp, fake: FakePlatformServer, account_id: str = "106540352242922"
) -> uuid.UUID:
    body = channel_body("whatsapp") | {"account_id": account_id, "api_base_url": fake.base_url}
    created = await api.client.post("/v1/channels", json=body, headers=api.auth(ADMIN_KEY))
    assert created.status_code == 201, created.text
    assert created.json()["sending"] == "active"
    return uuid.UUID(created.json()["id"])


async def channel(api: RunningApp, channel_id: uuid.UUID) -> dict[str, Any]:
    got = await api.client.get(f"/v1/channels/{channel_id}", headers=api.auth(ADMIN_KEY))
    assert got.status_code == 200, got.text
    body: dict[str, Any] = got.json()
    return body


async def channel_events(api: RunningApp) -> list[dict[str, Any]]:
    async with api.resources.sessionmaker() as session:
        rows = await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))
        events = [(r.key, orjson.loads(r.value)) for r in rows]
    return [e | {"key": key} for key, e in events if str(e["type"]).startswith("channel.")]


async def relayed_channel_events(api: RunningApp, want: int) -> list[tuple[str, Any]]:
    """Run the lifecycle relay and read the events topic until ``want`` channel events came."""
    settings = api.settings
    stop = asyncio.Event()
    relay = asyncio.create_task(run_relay(api.resources, stop, idle_interval=0.05))
    consumer = kafka.create_consumer(
        settings, settings.topic("outbound.events.v1"), group_id=f"g-{uuid.uuid4().hex}"
    )
    await consumer.start()
    received: list[tuple[str, Any]] = []
    try:
        async with asyncio.timeout(30):
            while len(received) < want:
                batch = await consumer.getmany(timeout_ms=300)
                for records in batch.values():
                    for r in records:
                        event = orjson.loads(r.value)
                        if str(event["type"]).startswith("channel."):
                            received.append(((r.key or b"").decode(), event))
    finally:
        await consumer.stop()
        stop.set()
        await relay
    return received


def texts_to(fake: FakePlatformServer, recipient: str) -> list[str]:
    return [
        text_of(r)
        for r in fake.requests
        if r.status == 200 and r.json and r.json.get("to") == recipient
    ]


async def test_a_paused_channel_sends_nothing_takes_webhooks_and_resume_delivers_in_order(
    api: RunningApp, fake: FakePlatformServer
) -> None:
    paused = await create_channel(api, fake)
    other = await create_channel(api, fake, account_id="106540352242999")
    answer = await api.client.post(
        f"/v1/channels/{paused}/pause", json={"reason": "maintenance"}, headers=api.auth(ADMIN_KEY)
    )
    assert answer.status_code == 200, answer.text
    assert (answer.json()["sending"], answer.json()["sending_reason"]) == ("paused", "maintenance")
    assert answer.json()["sending_since"] is not None
    assert answer.json()["enabled"] is True

    held = await enqueue(api.resources, paused, ["15550001"] * 5, tag="p")
    flowing = await enqueue(api.resources, other, ["15550002"] * 3, tag="o")
    webhook = whatsapp_payload(("wamid.P1", "16505551234", "hi while paused"))
    async with running(api.resources):
        await all_done(api.resources, flowing)  # the worker ran its rounds meanwhile
        received = await api.client.post(
            f"/webhooks/whatsapp/{paused}", content=webhook, headers=meta_headers(webhook)
        )
        assert received.status_code == 200, received.text
        assert texts_to(fake, "15550001") == []
        assert {m.state for m in (await states(api.resources, held)).values()} == {"queued"}

        resumed = await api.client.post(
            f"/v1/channels/{paused}/resume", headers=api.auth(ADMIN_KEY)
        )
        assert resumed.status_code == 200, resumed.text
        assert (resumed.json()["sending"], resumed.json()["sending_reason"]) == ("active", None)
        await all_done(api.resources, held)
    assert {m.state for m in (await states(api.resources, held)).values()} == {"sent"}
    assert texts_to(fake, "15550001") == [f"p{i}" for i in range(5)]
    assert await channel_events(api) == []  # an operator's pause is not a platform event


async def test_pause_and_resume_need_admin_and_an_existing_channel(api: RunningApp) -> None:
    missing = uuid.uuid4()
    for action in ("pause", "resume"):
        answer = await api.client.post(
            f"/v1/channels/{missing}/{action}", headers=api.auth(ADMIN_KEY)
        )
        assert answer.status_code == 404, answer.text
        anonymous = await api.client.post(f"/v1/channels/{missing}/{action}")
        assert anonymous.status_code == 401
    bad = await api.client.post(
        f"/v1/channels/{missing}/pause", json={"reason": "x" * 201}, headers=api.auth(ADMIN_KEY)
    )
    assert bad.status_code == 422


async def test_refused_credentials_suspend_at_the_first_failure_and_new_ones_resume(
    api: RunningApp, fake: FakePlatformServer
) -> None:
    channel_id = await create_channel(api, fake)
    fake.inject(Fault.credentials_refused("whatsapp", times=None))
    backlog = await enqueue(api.resources, channel_id, ["15550003"] * 4, tag="b")

    async def suspended() -> bool:
        return bool((await channel(api, channel_id))["sending"] == "suspended")

    async with running(api.resources):
        await eventually(suspended)
        resource = await channel(api, channel_id)
        assert resource["sending_reason"] == "credentials_refused"
        assert resource["sending_error"]["code"] == "190"
        assert resource["sending_error"]["http_status"] == 401
        assert "EAAG" not in orjson.dumps(resource).decode()
        rows = await states(api.resources, backlog)
        assert {m.state for m in rows.values()} <= WAITING  # nothing failed
        head = rows[backlog[0]]
        assert head.attempts == 1
        assert head.last_error is not None
        assert head.last_error["code"] == "190"
        assert [a.outcome for a in await attempts_of(api.resources, backlog[0])] == ["permanent"]
        assert len(fake.requests) == 1  # one refusal held the whole backlog
        (event,) = await channel_events(api)
        assert (event["type"], event["key"]) == ("channel.suspended", str(channel_id))
        assert event["data"]["channel_id"] == str(channel_id)
        assert event["data"]["platform"] == "whatsapp"
        assert event["data"]["error"]["code"] == "190"

        fake.faults.clear()
        patched = await api.client.patch(
            f"/v1/channels/{channel_id}",
            json={"credentials": {"access_token": "EAAG-new-token"}},
            headers=api.auth(ADMIN_KEY),
        )
        assert patched.status_code == 200, patched.text
        assert patched.json()["sending"] == "active"
        await all_done(api.resources, backlog)

        async def resumed_event() -> bool:
            return bool([e["type"] for e in await channel_events(api)][-1] == "channel.resumed")

        await eventually(resumed_event)
    assert {m.state for m in (await states(api.resources, backlog)).values()} == {"sent"}
    assert texts_to(fake, "15550003") == [f"b{i}" for i in range(4)]
    resumed = (await channel_events(api))[-1]
    assert resumed["data"]["reason"] == "credentials_updated"
    on_topic = await relayed_channel_events(api, want=2)
    assert [(key, e["type"]) for key, e in on_topic] == [
        (str(channel_id), "channel.suspended"),
        (str(channel_id), "channel.resumed"),
    ]


async def test_resume_lifts_a_suspension_with_channel_resumed(
    api: RunningApp, fake: FakePlatformServer
) -> None:
    channel_id = await create_channel(api, fake)
    fault = fake.inject(Fault.credentials_refused("whatsapp"))
    backlog = await enqueue(api.resources, channel_id, ["15550004"] * 2, tag="r")

    async def suspended() -> bool:
        return bool((await channel(api, channel_id))["sending"] == "suspended")

    async with running(api.resources):
        await eventually(suspended)
        assert fault.times == 0
        answer = await api.client.post(
            f"/v1/channels/{channel_id}/resume", headers=api.auth(ADMIN_KEY)
        )
        assert answer.json()["sending"] == "active"
        await all_done(api.resources, backlog)
    assert [e["type"] for e in await channel_events(api)] == [
        "channel.suspended",
        "channel.resumed",
    ]
    assert (await channel_events(api))[-1]["data"]["reason"] == "resumed"


async def test_the_channels_gauge_counts_paused_and_suspended_channels(
    api: RunningApp, fake: FakePlatformServer
) -> None:
    ids = [await create_channel(api, fake, account_id=f"10654035224{i:04d}") for i in range(4)]
    paused = await api.client.post(f"/v1/channels/{ids[0]}/pause", headers=api.auth(ADMIN_KEY))
    assert paused.status_code == 200
    replaced = [ids[1], ids[2]]
    async with api.resources.sessionmaker() as session, session.begin():
        suspensions = [
            control.Suspension(cid, "whatsapp", ChannelError(code="190")) for cid in replaced
        ]
        assert await control.suspend(session, suspensions, "t") == 2
        assert await control.suspend(session, suspensions, "t") == 0  # already suspended
    patched = await api.client.patch(
        f"/v1/channels/{ids[2]}",
        json={"credentials": {"access_token": "EAAG-new"}},
        headers=api.auth(ADMIN_KEY),
    )
    assert patched.json()["sending"] == "active"
    async with api.resources.engine.connect() as conn:
        sample = await take_sample(conn)
    assert sample.channels == {"active": 2, "paused": 1, "suspended": 1, "disabled": 0}


async def finish_as(
    api: RunningApp, ids: list[uuid.UUID], state: str, code: str, finished_at: datetime
) -> None:
    async with api.resources.sessionmaker() as session, session.begin():
        await session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id.in_(ids))
            .values(
                state=state,
                attempts=1,
                last_error={"code": code, "title": "t", "retryable": False},
                finished_at=finished_at,
            )
        )


async def test_failed_messages_are_redriven_one_by_one_and_in_bulk_by_filter(
    api: RunningApp, fake: FakePlatformServer
) -> None:
    auth = api.auth(ADMIN_KEY)
    first = await create_channel(api, fake)
    second = await create_channel(api, fake, account_id="106540352242999")
    now = datetime.now(UTC)
    revoked = await enqueue(api.resources, first, [f"1555100{i}" for i in range(5)])
    other_code = await enqueue(api.resources, first, ["15552000"])
    old = await enqueue(api.resources, first, ["15553000"])
    elsewhere = await enqueue(api.resources, second, ["15554000"])
    single = await enqueue(api.resources, second, ["15555000"])
    await finish_as(api, revoked[:3], "failed", "190", now)
    await finish_as(api, revoked[3:], "dead", "190", now)
    await finish_as(api, other_code, "failed", "131026", now)
    await finish_as(api, old, "failed", "190", now - timedelta(days=2))
    await finish_as(api, elsewhere + single, "failed", "190", now)

    one = await api.client.post(f"/v1/messages/{single[0]}/retry", headers=auth)
    assert one.status_code == 200, one.text
    assert one.json()["state"] == "queued"

    body = {
        "channel_id": str(first),
        "error_code": "190",
        "finished_after": (now - timedelta(hours=1)).isoformat(),
        "limit": 3,
    }
    page = await api.client.post("/v1/messages/retry", json=body, headers=auth)
    assert page.status_code == 200, page.text
    assert page.json() == {"count": 3, "more": True}
    rest = await api.client.post("/v1/messages/retry", json=body, headers=auth)
    assert rest.json() == {"count": 2, "more": False}
    again = await api.client.post("/v1/messages/retry", json=body, headers=auth)
    assert again.json() == {"count": 0, "more": False}

    rows = await states(api.resources, revoked + other_code + old + elsewhere + single)
    assert {rows[i].state for i in revoked + single} == {"queued"}
    assert {rows[i].state for i in other_code + old + elsewhere} == {"failed"}
    assert all(rows[i].retry_base == 1 and rows[i].finished_at is None for i in revoked)
    only_dead = await api.client.post(
        "/v1/messages/retry", json={"states": ["dead"], "channel_id": str(second)}, headers=auth
    )
    assert only_dead.json()["count"] == 0
    invalid = await api.client.post("/v1/messages/retry", json={"states": ["sent"]}, headers=auth)
    assert invalid.status_code == 422
    unix_time = await api.client.post(
        "/v1/messages/retry", json={"finished_before": 0}, headers=auth
    )
    assert unix_time.status_code == 422, "a number is not an RFC 3339 date-time"
    # The bulk route is not read as /v1/messages/{message_id}: only UUIDs are message ids.
    wrong_method = await api.client.put("/v1/messages/retry", headers=auth)
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST"
    assert (await api.client.get("/v1/messages/retry", headers=auth)).status_code == 405
    not_an_id = await api.client.get("/v1/messages/not-a-uuid", headers=auth)
    assert not_an_id.status_code == 404
    assert not_an_id.json()["error"]["code"] == "not_found"
    async with api.resources.sessionmaker() as session:
        queued_events = await session.scalar(
            select(func.count()).select_from(OutboxEvent).where(OutboxEvent.key.like(f"{first}:%"))
        )
    assert queued_events == 5


async def test_the_circuit_opens_on_repeated_5xx_and_the_backlog_is_not_burned(
    api: RunningApp, fake: FakePlatformServer
) -> None:
    body = channel_body("whatsapp") | {"api_base_url": fake.base_url, "send_rate_per_second": 10}
    created = await api.client.post("/v1/channels", json=body, headers=api.auth(ADMIN_KEY))
    channel_id = uuid.UUID(created.json()["id"])
    fake.inject(Fault.server_error(503, times=None))
    backlog = await enqueue(api.resources, channel_id, [f"1555600{i:02d}" for i in range(20)])
    worker = DeliveryWorker(api.resources, owner="w1")
    worker.ownership.breaker_policy = BreakerPolicy(
        window=20, threshold=0.8, min_samples=5, horizon=60.0, cooldown=2.0, max_cooldown=2.0
    )

    def failures() -> int:
        return sum(1 for r in fake.requests if r.status == 503)

    async def circuit_is(state: str) -> bool:
        return bool((await channel(api, channel_id))["circuit"] == state)

    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await eventually(lambda: circuit_is("open"))
        async with api.resources.engine.connect() as conn:
            sample = await take_sample(conn)
        assert sample.circuits == {("whatsapp", "open"): 1}
        opened_after = failures()
        assert opened_after < 12, "the breaker stopped the sends well before the backlog"

        async def probed() -> bool:  # a half-open probe failed: open again
            return failures() > opened_after

        await eventually(probed)
        rows = await states(api.resources, backlog)
        assert {m.state for m in rows.values()} <= WAITING | {"sending"}  # nothing failed
        untouched = [m for m in rows.values() if m.attempts == 0]
        assert len(untouched) >= 20 - failures()  # held back, no attempt counted
        fake.faults.clear()
        await all_done(api.resources, backlog)
        await eventually(lambda: circuit_is("closed"))
    finally:
        stop.set()
        await task
    rows = await states(api.resources, backlog)
    assert {m.state for m in rows.values()} == {"sent"}
    assert sum(m.attempts for m in rows.values()) == len(fake.requests)
