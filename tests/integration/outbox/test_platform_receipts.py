"""Receipts end to end, from a signed platform webhook through the gateway to the lifecycle
event (issue 12, item 3): nothing here builds a canonical event by hand.

The app runs the gateway and the messages API; the delivery worker and the receipts consumer
run in the test's loop; the platforms are the fake servers, whose Twilio posts signed status
callbacks to the ``StatusCallback`` URL it was given.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from fake_platforms.server import FakePlatformServer
from gateway.app import component as gateway_component
from infra.settings import Settings
from outbox.app import component as outbox_component
from outbox.models import ConversationWindow, OutboxEvent, OutboxMessage
from outbox.receipts_consumer import run_receipts_consumer
from outbox.service import window_key
from outbox.worker import DeliveryWorker
from tests.conftest import ADMIN_KEY
from tests.integration.gateway.conftest import ACCOUNTS, TG_SECRET, channel_body, meta_headers
from tests.integration.outbox.test_worker import eventually, tune
from tests.support import RunningApp, running_app

pytestmark = pytest.mark.integration

PSID = "6101234567890123"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "payloads"


@dataclass
class Stack:
    app: RunningApp
    fake: FakePlatformServer

    async def channel(self, platform: str) -> str:
        body = {**channel_body(platform), "api_base_url": self.fake.base_url}
        reply = await self.app.client.post(
            "/v1/channels", json=body, headers=self.app.auth(ADMIN_KEY)
        )
        assert reply.status_code == 201, reply.text
        return str(reply.json()["id"])

    async def send(self, channel_id: str, to: str, text: str) -> uuid.UUID:
        reply = await self.app.client.post(
            "/v1/messages",
            json={"channel_id": channel_id, "to": to, "content": {"kind": "text", "text": text}},
            headers={**self.app.auth(ADMIN_KEY), "Idempotency-Key": uuid.uuid4().hex},
        )
        assert reply.status_code == 202, reply.text
        return uuid.UUID(reply.json()["id"])

    async def message(self, message_id: uuid.UUID) -> OutboxMessage:
        async with self.app.resources.sessionmaker() as session:
            row = await session.get(OutboxMessage, message_id)
            assert row is not None
            return row

    async def event_types(self, message_id: uuid.UUID) -> list[str]:
        async with self.app.resources.sessionmaker() as session:
            values = await session.scalars(select(OutboxEvent.value).order_by(OutboxEvent.id))
        types = []
        for value in values:
            event = orjson.loads(value)
            if event["data"]["message_id"] == str(message_id):
                types.append(event["type"])
        return types

    async def until_state(self, message_id: uuid.UUID, state: str) -> None:
        async def check() -> bool:
            return (await self.message(message_id)).state == state

        await eventually(check, limit=30)


@pytest.fixture
async def stack(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Stack]:
    settings = tune(settings, kafka_consumer_group=f"r-{uuid.uuid4().hex[:8]}")
    components = [gateway_component(settings), outbox_component(settings)]
    async with (
        FakePlatformServer() as fake,
        running_app(settings, components) as app,
    ):
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(DeliveryWorker(app.resources, owner="w1").run(stop)),
            asyncio.create_task(run_receipts_consumer(app.resources, stop)),
        ]
        try:
            yield Stack(app, fake)
        finally:
            stop.set()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks)


async def test_twilio_status_callback_comes_back_as_delivered(stack: Stack) -> None:
    channel_id = await stack.channel("twilio")
    message_id = await stack.send(channel_id, "+15558675310", "hello")
    await stack.until_state(message_id, "delivered")

    [send] = [r for r in stack.fake.requests if r.platform == "twilio"]
    webhook = f"{stack.app.base_url}/webhooks/twilio/{channel_id}"
    assert send.form["StatusCallback"] == [webhook]
    row = await stack.message(message_id)
    assert [c.params["MessageSid"] for c in stack.fake.callbacks] == [row.platform_message_id] * 2
    assert {c.url for c in stack.fake.callbacks} == {webhook}
    assert all(c.status == 200 for c in stack.fake.callbacks)  # verified by the gateway
    lifecycle = ["message.queued", "message.sent", "message.delivered"]
    assert await stack.event_types(message_id) == lifecycle


def read_watermark(watermark_ms: int) -> bytes:
    page = ACCOUNTS["messenger"]
    return json.dumps(
        {
            "object": "page",
            "entry": [
                {
                    "id": page,
                    "time": watermark_ms,
                    "messaging": [
                        {
                            "sender": {"id": PSID},
                            "recipient": {"id": page},
                            "timestamp": watermark_ms,
                            "read": {"watermark": watermark_ms},
                        }
                    ],
                }
            ],
        }
    ).encode()


async def test_messenger_read_watermark_marks_earlier_messages_read(stack: Stack) -> None:
    channel_id = await stack.channel("messenger")
    first = await stack.send(channel_id, PSID, "one")
    second = await stack.send(channel_id, PSID, "two")
    other = await stack.send(channel_id, "6109999999999999", "someone else")
    for message_id in (first, second, other):
        await stack.until_state(message_id, "sent")
    watermark = int(time.time() * 1000)
    body = read_watermark(watermark)
    reply = await stack.app.client.post(
        f"/webhooks/messenger/{channel_id}", content=body, headers=meta_headers(body)
    )
    assert reply.status_code == 200, reply.text
    await stack.until_state(first, "read")
    await stack.until_state(second, "read")
    assert (await stack.message(other)).state == "sent"  # another recipient
    assert await stack.event_types(first) == ["message.queued", "message.sent", "message.read"]

    # Forward-only: an older watermark covers nothing new. The inbound message after it (same
    # conversation, same partition) opens a window: once that is recorded, the watermark before
    # it has been handled too.
    late = await stack.send(channel_id, PSID, "after the watermark")
    await stack.until_state(late, "sent")
    for body in (read_watermark(watermark - 60_000), inbound_text(int(time.time() * 1000))):
        reply = await stack.app.client.post(
            f"/webhooks/messenger/{channel_id}", content=body, headers=meta_headers(body)
        )
        assert reply.status_code == 200, reply.text

    async def window_recorded() -> bool:
        async with stack.app.resources.sessionmaker() as session:
            key = window_key(channel_id, "messenger", PSID)
            return await session.get(ConversationWindow, key) is not None

    await eventually(window_recorded, limit=30)
    assert (await stack.message(late)).state == "sent"
    assert await stack.event_types(first) == ["message.queued", "message.sent", "message.read"]


def inbound_text(when_ms: int) -> bytes:
    page = ACCOUNTS["messenger"]
    event = {
        "sender": {"id": PSID},
        "recipient": {"id": page},
        "timestamp": when_ms,
        "message": {"mid": f"m_{uuid.uuid4().hex}", "text": "thanks"},
    }
    return json.dumps(
        {"object": "page", "entry": [{"id": page, "time": when_ms, "messaging": [event]}]}
    ).encode()


async def test_whatsapp_billable_statuses_are_counted_per_category(stack: Stack) -> None:
    sample = {"platform": "whatsapp", "category": "marketing"}
    name = "switchboard_outbox_billable_messages_total"
    before = REGISTRY.get_sample_value(name, sample) or 0.0
    channel_id = await stack.channel("whatsapp")
    body = (FIXTURES / "whatsapp" / "status_sent.json").read_bytes()
    reply = await stack.app.client.post(
        f"/webhooks/whatsapp/{channel_id}", content=body, headers=meta_headers(body)
    )
    assert reply.status_code == 200, reply.text

    async def counted() -> bool:
        return (REGISTRY.get_sample_value(name, sample) or 0.0) == before + 1

    await eventually(counted, limit=30)


async def test_telegram_button_press_is_answered_once(stack: Stack) -> None:
    channel_id = await stack.channel("telegram")
    body = (FIXTURES / "telegram" / "callback_query.json").read_bytes()
    headers = {"content-type": "application/json", "x-telegram-bot-api-secret-token": TG_SECRET}
    for _ in range(2):  # a redelivered update is answered once
        reply = await stack.app.client.post(
            f"/webhooks/telegram/{channel_id}", content=body, headers=headers
        )
        assert reply.status_code == 200, reply.text

    def answers() -> list[Any]:
        return [r for r in stack.fake.requests if r.path.endswith("/answerCallbackQuery")]

    async def answered() -> bool:
        return len(answers()) == 1

    await eventually(answered, limit=30)
    assert answers()[0].json == {"callback_query_id": "4382bfdwdsb323b2d9"}
