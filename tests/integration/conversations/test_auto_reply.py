"""Automatic acknowledgements: the first customer message of an episode gets the outside-hours
text as a send command on the commands topic (metadata marks it automatic; the outbox's own
contract parses it), once per cooldown, never to an opted-out contact; the configuration API."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from outbox.contracts import SendCommand
from tests.integration.conversations.conftest import Harness, TopicReader, eventually
from tests.integration.gateway.conftest import ACCOUNTS

pytestmark = pytest.mark.integration

CONVERSATION = f"whatsapp:{ACCOUNTS['whatsapp']}:393331234567"
ALWAYS_CLOSED: dict[str, Any] = {
    "text_in_hours": "Thanks! We answer within minutes.",
    "text_outside_hours": "We are closed now; we answer tomorrow from 9:00.",
    "timezone": "Europe/Rome",
    "business_hours": {},
    "cooldown_hours": 12,
}


async def _configure(harness: Harness, body: dict[str, Any]) -> None:
    response = await harness.client.put(
        f"/v1/channels/{harness.channels['whatsapp']}/auto-reply",
        json=body,
        headers=harness.admin(),
    )
    assert response.status_code == 200, response.text


async def _commands_staged(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        count = await conn.scalar(
            text("SELECT count(*) FROM conv_events WHERE topic LIKE '%outbound.commands.v1'")
        )
    return int(count or 0)


async def _inbound_count(harness: Harness, n: int) -> bool:
    response = await harness.client.get(
        f"/v1/conversations/{CONVERSATION}/messages", headers=harness.admin()
    )
    if response.status_code != 200:
        return False
    return len([m for m in response.json()["items"] if m["direction"] == "inbound"]) >= n


async def test_outside_hours_acknowledgement_once_per_cooldown(
    harness: Harness, commands: TopicReader, engine: AsyncEngine
) -> None:
    await harness.create_channel("whatsapp")
    await _configure(harness, ALWAYS_CLOSED)
    await harness.whatsapp("wamid.1", "393331234567", "hello, is the shop open?")
    records = await commands.until(lambda r: len(r) >= 1)
    command = records[0]
    assert command["type"] == "message.send"
    assert command["key"] == f"{harness.channels['whatsapp']}:393331234567"
    parsed = SendCommand.model_validate(command["data"])  # the outbox's own contract
    assert parsed.to == "393331234567"
    assert parsed.content.text == ALWAYS_CLOSED["text_outside_hours"]
    assert parsed.metadata["switchboard"] == {
        "automatic": True,
        "reason": "auto_reply",
        "conversation_id": CONVERSATION,
    }
    assert parsed.not_after is not None

    # The outbox sends it (automatic: no reply), then a human answers; the customer writes
    # again, a new episode, but within the cooldown: no second acknowledgement.
    await harness.lifecycle(
        "message.sent",
        platform="whatsapp",
        to="393331234567",
        message_id="ack-out",
        metadata=parsed.metadata,
    )
    await harness.lifecycle(
        "message.sent", platform="whatsapp", to="393331234567", message_id="human"
    )
    await eventually(lambda: _answered(harness))
    await harness.whatsapp("wamid.2", "393331234567", "thanks, one more question")
    await eventually(lambda: _inbound_count(harness, 2))
    assert await _commands_staged(engine) == 1


async def test_no_acknowledgement_to_an_opted_out_contact(
    harness: Harness, engine: AsyncEngine
) -> None:
    await harness.create_channel("whatsapp")
    await _configure(harness, ALWAYS_CLOSED)
    opted = await harness.client.put(
        f"/v1/channels/{harness.channels['whatsapp']}/opt-outs/+393331234567",
        headers=harness.admin(),
    )
    assert opted.status_code == 200, opted.text
    await harness.whatsapp("wamid.1", "393331234567", "hello")
    await eventually(lambda: _inbound_count(harness, 1))
    assert await _commands_staged(engine) == 0


async def test_in_hours_text_when_open(harness: Harness, commands: TopicReader) -> None:
    await harness.create_channel("whatsapp")
    always_open = {
        **ALWAYS_CLOSED,
        "business_hours": {
            day: [{"start": "00:00", "end": "00:00"}]
            for day in (
                "monday",
                "tuesday",
                "wednesday",
                "thursday",
                "friday",
                "saturday",
                "sunday",
            )
        },
    }
    await _configure(harness, always_open)
    await harness.whatsapp("wamid.1", "393331234567", "hello")
    records = await commands.until(lambda r: len(r) >= 1)
    assert records[0]["data"]["content"]["text"] == ALWAYS_CLOSED["text_in_hours"]


async def test_configuration_api(harness: Harness) -> None:
    channel = await harness.create_channel("whatsapp")
    path = f"/v1/channels/{channel}/auto-reply"
    missing = await harness.client.get(path, headers=harness.admin())
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "auto_reply_not_configured"
    await _configure(harness, {**ALWAYS_CLOSED, "holidays": ["2026-12-25"]})
    got = await harness.client.get(path, headers=harness.admin())
    assert got.status_code == 200
    assert got.json()["holidays"] == ["2026-12-25"]
    assert got.json()["timezone"] == "Europe/Rome"

    for bad in (
        {**ALWAYS_CLOSED, "timezone": "Mars/Olympus"},
        {"timezone": "UTC"},  # no text at all
        {**ALWAYS_CLOSED, "business_hours": {"monday": [{"start": "18:00", "end": "09:00"}]}},
        {**ALWAYS_CLOSED, "business_hours": {"funday": []}},
        {**ALWAYS_CLOSED, "unknown": 1},
    ):
        refused = await harness.client.put(path, json=bad, headers=harness.admin())
        assert refused.status_code == 422, bad
        assert refused.json()["error"]["code"] == "validation_error"

    deleted = await harness.client.delete(path, headers=harness.admin())
    assert deleted.status_code == 204
    assert (await harness.client.get(path, headers=harness.admin())).status_code == 404
    unknown = await harness.client.get(
        "/v1/channels/00000000-0000-0000-0000-000000000000/auto-reply", headers=harness.admin()
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["code"] == "channel_not_found"


async def _answered(harness: Harness) -> bool:
    items = (await harness.conversations())["items"]
    return bool(items) and items[0]["state"] == "answered"
