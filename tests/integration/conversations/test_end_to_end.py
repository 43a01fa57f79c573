"""The whole path with the real outbox and a fake Telegram: a signed webhook opens an episode,
the outside-hours acknowledgement goes out through the outbox (and is no reply), the episode is
reported unanswered once, and a reply sent with `POST /v1/messages` answers it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from conversations.app import component as conversations_component
from conversations.worker import run_worker as run_conversations
from fake_platforms.server import FakePlatformServer
from gateway.app import component as gateway_component
from infra.settings import Settings
from outbox.app import component as outbox_component
from outbox.app import run_worker as run_outbox
from tests.integration.conversations.conftest import Harness, TopicReader, eventually
from tests.integration.gateway.conftest import ACCOUNTS, channel_body
from tests.integration.outbox.test_worker import tune
from tests.support import running_app

pytestmark = pytest.mark.integration

CONVERSATION = f"telegram:{ACCOUNTS['telegram']}:42"


@pytest.fixture
async def fake() -> AsyncIterator[FakePlatformServer]:
    async with FakePlatformServer() as server:
        yield server


@pytest.fixture
async def everything(
    conversation_settings: Settings, engine: AsyncEngine
) -> AsyncIterator[Harness]:
    settings = tune(conversation_settings)
    components = [
        gateway_component(settings),
        outbox_component(settings),
        conversations_component(settings),
    ]
    async with running_app(settings, components) as app:
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(run_outbox(app.resources, stop)),
            asyncio.create_task(run_conversations(app.resources, stop)),
        ]
        try:
            yield Harness(app)
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*workers), 60)


async def test_acknowledged_reported_and_answered_through_the_outbox(
    everything: Harness, fake: FakePlatformServer
) -> None:
    harness = everything
    created = await harness.client.post(
        "/v1/channels",
        json={**channel_body("telegram"), "api_base_url": fake.base_url},
        headers=harness.admin(),
    )
    assert created.status_code == 201, created.text
    channel = harness.channels["telegram"] = str(created.json()["id"])
    for path, body in (
        ("conversation-settings", {"unanswered_after_seconds": 1}),
        ("auto-reply", {"text_outside_hours": "We are closed, back at 9.", "cooldown_hours": 1}),
    ):
        response = await harness.client.put(
            f"/v1/channels/{channel}/{path}", json=body, headers=harness.admin()
        )
        assert response.status_code == 200, response.text
    events = TopicReader(harness.settings, "conversations.v1")
    try:
        await harness.telegram(1, 42, "hello, anyone there?")
        await eventually(lambda: [r for r in fake.requests if r.platform == "telegram"])
        ack = next(r for r in fake.requests if r.platform == "telegram")
        assert ack.json["text"] == "We are closed, back at 9."
        assert str(ack.json["chat_id"]) == "42"

        await events.until(lambda _: events.of_type("conversation.unanswered"))
        reply = await harness.client.post(
            "/v1/messages",
            json={"channel_id": channel, "to": "42", "content": {"kind": "text", "text": "Hi!"}},
            headers={**harness.admin(), "Idempotency-Key": "reply-1"},
        )
        assert reply.status_code == 202, reply.text
        await events.until(lambda _: events.of_type("conversation.answered"))
    finally:
        await events.close()

    answered = events.of_type("conversation.answered")
    assert len(answered) == 1
    assert answered[0]["data"]["message_id"] == reply.json()["id"]
    assert answered[0]["data"]["was_unanswered"] is True
    assert len(events.of_type("conversation.unanswered")) == 1
    page = await harness.timeline(CONVERSATION)
    outbound = [m for m in page["items"] if m["direction"] == "outbound"]
    assert [m["automatic"] for m in outbound] == [True, False]
    assert page["items"][0]["direction"] == "inbound"
