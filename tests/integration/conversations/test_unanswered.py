"""Unanswered-conversation events: exactly one ``conversation.unanswered`` per episode after the
channel's threshold, ``conversation.answered`` with the response time when our reply is sent,
automatic sends never count as a reply, and concurrent timer passes (replicas) report once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from conversations.timers import fire_due
from tests.integration.conversations.conftest import Harness, TopicReader, eventually
from tests.integration.gateway.conftest import ACCOUNTS

pytestmark = pytest.mark.integration

CONVERSATION = f"telegram:{ACCOUNTS['telegram']}:42"


async def _threshold(harness: Harness, seconds: float | None) -> None:
    response = await harness.client.put(
        f"/v1/channels/{harness.channels['telegram']}/conversation-settings",
        json={"unanswered_after_seconds": seconds},
        headers=harness.admin(),
    )
    assert response.status_code == 200, response.text


async def test_unanswered_once_then_answered_with_the_response_time(
    harness: Harness, conversation_events: TopicReader
) -> None:
    await harness.create_channel("telegram")
    await _threshold(harness, 1.0)
    await harness.telegram(1, 42, "hello?")
    await conversation_events.until(
        lambda _: conversation_events.of_type("conversation.unanswered")
    )
    listed = await harness.conversations(state="unanswered")
    assert [c["conversation_id"] for c in listed["items"]] == [CONVERSATION]

    await harness.telegram(2, 42, "anyone?")  # same episode: no second event
    await harness.lifecycle("message.sent", platform="telegram", to="42", message_id="reply-1")
    await conversation_events.until(lambda _: conversation_events.of_type("conversation.answered"))

    unanswered = conversation_events.of_type("conversation.unanswered")
    assert len(unanswered) == 1
    assert unanswered[0]["key"] == CONVERSATION
    assert unanswered[0]["data"]["episode"] == 1
    assert unanswered[0]["data"]["unanswered_after_seconds"] == 1.0
    answered = conversation_events.of_type("conversation.answered")
    assert len(answered) == 1
    data = answered[0]["data"]
    assert data["was_unanswered"] is True
    assert data["message_id"] == "reply-1"
    assert data["response_time_seconds"] >= 1.0
    assert (await harness.conversations(state="answered"))["items"][0]["state"] == "answered"
    observed = REGISTRY.get_sample_value(
        "switchboard_conversations_response_seconds_count",
        {"channel_id": harness.channels["telegram"]},
    )
    assert observed == 1.0


async def test_automatic_sends_typing_and_reactions_are_no_reply(
    harness: Harness, conversation_events: TopicReader
) -> None:
    await harness.create_channel("telegram")
    await harness.telegram(1, 42, "hello?")
    await eventually(lambda: _state(harness, "open"))
    await harness.lifecycle(
        "message.sent",
        platform="telegram",
        to="42",
        message_id="ack-1",
        metadata={"switchboard": {"automatic": True}},
    )
    await harness.lifecycle("message.sent", platform="telegram", to="42", message_id="human-1")
    await conversation_events.until(lambda _: conversation_events.of_type("conversation.answered"))
    answered = conversation_events.of_type("conversation.answered")
    assert [a["data"]["message_id"] for a in answered] == ["human-1"]
    assert answered[0]["data"]["was_unanswered"] is False
    page = await harness.timeline(CONVERSATION)
    assert [(m["message_id"], m["automatic"]) for m in page["items"][1:]] == [
        ("ack-1", True),
        ("human-1", False),
    ]


async def test_a_redelivered_sent_event_does_not_answer_the_next_episode(
    harness: Harness, conversation_events: TopicReader
) -> None:
    await harness.create_channel("telegram")
    await harness.telegram(1, 42, "first")
    await eventually(lambda: _state(harness, "open"))
    await harness.lifecycle("message.sent", platform="telegram", to="42", message_id="reply-1")
    await eventually(lambda: _state(harness, "answered"))
    await harness.telegram(2, 42, "second")
    await eventually(lambda: _state(harness, "open"))
    await harness.lifecycle("message.sent", platform="telegram", to="42", message_id="reply-1")
    await harness.lifecycle("message.delivered", platform="telegram", to="42", message_id="reply-1")
    await eventually(lambda: _delivered(harness, "reply-1"))
    assert await _state(harness, "open")


async def test_concurrent_timer_passes_report_an_episode_once(
    harness: Harness, engine: AsyncEngine
) -> None:
    await harness.create_channel("telegram")
    await _threshold(harness, 3600.0)  # the running worker's timer stays quiet
    await harness.telegram(1, 42, "hello?")
    await eventually(lambda: _state(harness, "open"))
    later = datetime.now(UTC) + timedelta(hours=2)
    maker = async_sessionmaker(engine, expire_on_commit=False)
    async with maker() as first, maker() as second:
        assert await fire_due(first, harness.settings, later) == 1
        assert await fire_due(second, harness.settings, later) == 0  # row locked: skipped
        await first.commit()
        await second.commit()
    async with maker() as third:
        assert await fire_due(third, harness.settings, later) == 0  # already reported
    async with engine.connect() as conn:
        staged = await conn.scalar(
            text("SELECT count(*) FROM conv_events WHERE value LIKE '%conversation.unanswered%'")
        )
    assert staged == 1


async def test_timer_races_from_many_replicas(harness: Harness, engine: AsyncEngine) -> None:
    await harness.create_channel("telegram")
    await _threshold(harness, 3600.0)
    for chat in range(1, 11):
        await harness.telegram(chat, chat, "hi")
    await eventually(lambda: _count_open(harness, 10))
    later = datetime.now(UTC) + timedelta(hours=2)
    maker = async_sessionmaker(engine, expire_on_commit=False)

    async def replica() -> int:
        async with maker() as session:
            fired = await fire_due(session, harness.settings, later, limit=3)
            await session.commit()
            return fired

    fired = sum(await asyncio.gather(*(replica() for _ in range(8))))
    while (more := await replica()) > 0:
        fired += more
    assert fired == 10
    async with engine.connect() as conn:
        staged = await conn.scalar(
            text("SELECT count(*) FROM conv_events WHERE value LIKE '%conversation.unanswered%'")
        )
    assert staged == 10


async def _state(harness: Harness, state: str) -> bool:
    items = (await harness.conversations())["items"]
    return bool(items) and items[0]["state"] == state


async def _count_open(harness: Harness, n: int) -> bool:
    return len((await harness.conversations(state="open"))["items"]) >= n


async def _delivered(harness: Harness, message_id: str) -> bool:
    page = await harness.timeline(CONVERSATION)
    return any(m["message_id"] == message_id and m["state"] == "delivered" for m in page["items"])
