"""Records the conversation layer cannot store are skipped, never block their partition, and
nothing valid behind them is lost; the worker stops cleanly."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest

from infra.kafka import CE_HEADERS
from tests.integration.conversations.conftest import Harness, eventually
from tests.integration.gateway.conftest import ACCOUNTS

pytestmark = pytest.mark.integration

CONVERSATION = f"telegram:{ACCOUNTS['telegram']}:42"


def _event(channel_id: str, message_id: str, text: str) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": f"/switchboard/telegram/{channel_id}",
        "type": "message.received",
        "time": "2026-12-03T10:00:00Z",
        "subject": CONVERSATION,
        "datacontenttype": "application/json",
        "data": {
            "platform": "telegram",
            "channel_id": channel_id,
            "account_id": ACCOUNTS["telegram"],
            "conversation_id": CONVERSATION,
            "contact": {"id": "42", "name": None, "phone": None, "username": None},
            "message": {"id": message_id, "kind": "text", "text": text},
        },
    }


async def test_unstorable_records_are_skipped_and_the_rest_recorded(harness: Harness) -> None:
    channel = await harness.create_channel("telegram")
    topic = harness.settings.topic("inbound.v1")
    values = [
        b"not json",
        b"[1, 2]",
        orjson.dumps(_event(channel, "x" * 400, "too long an id")),
        orjson.dumps(_event(channel, "nul-1", "a \u0000 in the text")),
        orjson.dumps({**_event(channel, "bad-channel", "hi"), "data": {"channel_id": "nope"}}),
        orjson.dumps(_event(channel, "good-1", "hello")),
    ]
    for value in values:  # one key: one partition, in this order
        await harness.app.resources.producer.send_and_wait(
            topic, value, key=CONVERSATION.encode(), headers=CE_HEADERS
        )
    await eventually(lambda: _has(harness, "good-1"))
    page = await harness.timeline(CONVERSATION)
    assert [m["message_id"] for m in page["items"]] == ["good-1"]


async def _has(harness: Harness, message_id: str) -> bool:
    response = await harness.client.get(
        f"/v1/conversations/{CONVERSATION}/messages", headers=harness.admin()
    )
    if response.status_code != 200:
        return False
    return any(m["message_id"] == message_id for m in response.json()["items"])


async def test_batches_sharing_conversations_in_opposite_orders_both_commit(
    harness: Harness,
) -> None:
    """Replicas lock a batch's conversations in one order: two batches touching the same
    conversations in opposite orders wait for each other instead of deadlocking."""
    from dataclasses import dataclass

    from conversations.consumer import Handler, handle_batch
    from conversations.inbound import apply_inbound

    @dataclass
    class Record:
        topic: str
        value: bytes
        partition: int = 0
        offset: int = 0

    channel = await harness.create_channel("telegram")
    topic = harness.settings.topic("inbound.v1")
    handlers: dict[str, Handler] = {topic: apply_inbound}

    def record(chat: int, message_id: str) -> Record:
        event = _event(channel, message_id, "hi")
        conversation = f"telegram:{ACCOUNTS['telegram']}:{chat}"
        event["subject"] = event["data"]["conversation_id"] = conversation
        return Record(topic, orjson.dumps(event))

    chats = list(range(1, 21))
    await handle_batch(harness.app.resources, [record(c, f"seed-{c}") for c in chats], handlers)
    for round_ in range(5):
        forward = [record(c, f"f{round_}-{c}") for c in chats]
        backward = [record(c, f"b{round_}-{c}") for c in reversed(chats)]
        await asyncio.gather(
            handle_batch(harness.app.resources, forward, handlers),
            handle_batch(harness.app.resources, backward, handlers),
        )
    listed = await harness.conversations(limit=50)
    assert len(listed["items"]) == 20
    page = await harness.timeline(f"telegram:{ACCOUNTS['telegram']}:7")
    assert len(page["items"]) == 11
