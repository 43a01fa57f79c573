"""Opt-outs and frequency caps at the outbox's intake (issue 13 items 4 and 5), end to end:
signed webhooks through the gateway, the conversation worker recording "STOP"/"START", the
outbox's receipts consumer recording the customer's window, and the messages API refusing
proactive sends with ``opted_out`` / ``frequency_capped``. Real PostgreSQL and broker."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from conversations.app import component as conversations_component
from conversations.worker import run_worker
from gateway.app import component as gateway_component
from infra.settings import Settings
from outbox import service
from outbox.app import component as outbox_component
from outbox.contracts import SendCommand
from outbox.models import ConversationWindow, OutboxEvent, OutboxMessage
from tests.integration.conversations.conftest import Harness, eventually
from tests.integration.gateway.conftest import ACCOUNTS
from tests.support import running_app

pytestmark = pytest.mark.integration

WA_CUSTOMER = "393331234567"
WA_TO = "+39 333 1234567"
SMS_CUSTOMER = "+15557654321"


@pytest.fixture
async def harness(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Harness]:
    """Gateway, conversations and outbox in one app; the outbox's consumers run in it (its
    receipts consumer records the customer's window), the conversation worker beside it."""
    run = uuid.uuid4().hex[:8]
    settings = settings.model_copy(
        update={
            "gateway_relay_interval_seconds": 0.2,
            "conversations_timer_interval": 0.2,
            "conversations_relay_interval": 0.1,
            "conversations_consumer_group": f"conv-{run}",
            "kafka_consumer_group": f"outbox-{run}",
            "outbox_api_runs_consumers": True,
        }
    )
    components = [
        gateway_component(settings),
        conversations_component(settings),
        outbox_component(settings),
    ]
    async with running_app(settings, components) as app:
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(app.resources, stop))
        try:
            yield Harness(app)
        finally:
            stop.set()
            await asyncio.wait_for(worker, 30)


def template(channel_id: str, to: str = WA_TO) -> dict[str, Any]:
    return {
        "channel_id": channel_id,
        "to": to,
        "content": {"kind": "template", "template": {"name": "promo", "language": "en"}},
    }


def text(channel_id: str, to: str = WA_TO, body: str = "Here is your answer") -> dict[str, Any]:
    return {"channel_id": channel_id, "to": to, "content": {"kind": "text", "text": body}}


async def send(harness: Harness, body: dict[str, Any]) -> Any:
    headers = harness.admin() | {"Idempotency-Key": uuid.uuid4().hex}
    return await harness.client.post("/v1/messages", json=body, headers=headers)


async def opt_outs(harness: Harness, channel: str) -> list[str]:
    response = await harness.client.get(f"/v1/channels/{channel}/opt-outs", headers=harness.admin())
    assert response.status_code == 200, response.text
    return [o["contact_id"] for o in response.json()["items"]]


async def stored(harness: Harness) -> int:
    async with harness.app.resources.sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(OutboxMessage)) or 0)


async def open_window(harness: Harness, channel: str, peer: str) -> None:
    """The customer wrote just now (what the receipts consumer records from ``inbound.v1``)."""
    async with harness.app.resources.sessionmaker() as session, session.begin():
        session.add(
            ConversationWindow(
                conversation_key=f"{channel}:{peer}", last_inbound_at=datetime.now(UTC)
            )
        )


async def test_stop_refuses_templates_until_start(harness: Harness) -> None:
    channel = await harness.create_channel("whatsapp")
    assert (await send(harness, template(channel))).status_code == 202  # not opted out yet

    await harness.whatsapp("wamid.stop", WA_CUSTOMER, "STOP", ts=int(time.time()))
    assert await eventually(lambda: opt_outs(harness, channel))
    before = await stored(harness)

    refused = await send(harness, template(channel))
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "opted_out"
    assert "opted out" in error["message"]
    assert await stored(harness) == before  # the API stores nothing it refuses

    # A Kafka command is stored as failed with the same code and a message.failed event.
    command = SendCommand.model_validate({"id": "kafka-promo-1", **template(channel)})
    async with harness.app.resources.sessionmaker() as session, session.begin():
        accepted = await service.accept(session, harness.settings, command, source="kafka")
    assert accepted.message.state == "failed"
    assert accepted.message.last_error is not None
    assert accepted.message.last_error["code"] == "opted_out"
    assert accepted.message.proactive_key is None  # refused: counted by no cap
    async with harness.app.resources.sessionmaker() as session:
        events = [orjson.loads(e.value) for e in await session.scalars(select(OutboxEvent))]
    failed = [e for e in events if e["data"]["command_id"] == "kafka-promo-1"]
    assert [e["type"] for e in failed] == ["message.failed"]
    assert failed[0]["data"]["error"]["code"] == "opted_out"

    # The customer's STOP opened the conversation (the outbox's receipts consumer saw it): on
    # WhatsApp a reply inside it is not refused, and it goes in the reply lane.
    async def window() -> bool:
        async with harness.app.resources.sessionmaker() as session:
            return await session.get(ConversationWindow, f"{channel}:{WA_CUSTOMER}") is not None

    await eventually(window)
    reply = await send(harness, text(channel))
    assert reply.status_code == 202, reply.text
    assert reply.json()["lane"] == "reply"

    await harness.whatsapp("wamid.start", WA_CUSTOMER, "START", ts=int(time.time()))
    await eventually(lambda: _empty(harness, channel))
    again = await send(harness, template(channel))
    assert again.status_code == 202, again.text
    assert again.json()["lane"] == "bulk"


async def _empty(harness: Harness, channel: str) -> bool:
    return await opt_outs(harness, channel) == []


async def test_sms_opt_out_refuses_replies_too_until_deleted(harness: Harness) -> None:
    channel = await harness.create_channel("twilio")
    put = await harness.client.put(
        f"/v1/channels/{channel}/opt-outs/{SMS_CUSTOMER}", headers=harness.admin()
    )
    assert put.status_code in (200, 201, 204), put.text
    await open_window(harness, channel, SMS_CUSTOMER)

    reply = await send(harness, text(channel, SMS_CUSTOMER))
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"]["code"] == "opted_out"
    assert "SMS" in reply.json()["error"]["message"]

    deleted = await harness.client.delete(
        f"/v1/channels/{channel}/opt-outs/{SMS_CUSTOMER}", headers=harness.admin()
    )
    assert deleted.status_code in (200, 204), deleted.text
    assert (await send(harness, text(channel, SMS_CUSTOMER))).status_code == 202


async def test_the_n_plus_first_proactive_send_is_frequency_capped(harness: Harness) -> None:
    channel = await harness.create_channel("whatsapp")
    path = f"/v1/channels/{channel}/frequency-cap"
    assert (await harness.client.get(path, headers=harness.admin())).status_code == 404
    bad = await harness.client.put(
        path, json={"max_messages": 0, "period_seconds": 60}, headers=harness.admin()
    )
    assert bad.status_code == 422
    cap = {"max_messages": 2, "period_seconds": 3600}
    put = await harness.client.put(path, json=cap, headers=harness.admin())
    assert put.status_code == 200, put.text
    assert (await harness.client.get(path, headers=harness.admin())).json() == cap

    first = await send(harness, template(channel))
    second = await send(harness, template(channel, to=WA_CUSTOMER))  # same contact, by digits
    assert (first.status_code, second.status_code) == (202, 202)
    capped = await send(harness, template(channel))
    assert capped.status_code == 422, capped.text
    error = capped.json()["error"]
    assert error["code"] == "frequency_capped"
    allowed_at = datetime.fromisoformat(error["details"]["allowed_at"])
    first_created = datetime.fromisoformat(first.json()["created_at"])
    assert abs(allowed_at - (first_created + timedelta(hours=1))) < timedelta(seconds=1)
    assert error["details"]["allowed_at"] in error["message"]

    # Another contact has its own count; a reply inside the customer's conversation never
    # counts (and is never capped).
    assert (await send(harness, template(channel, to="+39 333 7654321"))).status_code == 202
    await open_window(harness, channel, WA_CUSTOMER)
    for n in range(3):
        assert (await send(harness, text(channel, body=f"answer {n}"))).status_code == 202
    assert (await send(harness, template(channel))).json()["error"]["code"] == "frequency_capped"

    # A cancelled message does not count.
    cancelled = await harness.client.post(
        f"/v1/messages/{first.json()['id']}/cancel", headers=harness.admin()
    )
    assert cancelled.status_code == 200, cancelled.text
    assert (await send(harness, template(channel))).status_code == 202
    assert (await send(harness, template(channel))).status_code == 422

    deleted = await harness.client.delete(path, headers=harness.admin())
    assert deleted.status_code == 204
    assert (await send(harness, template(channel))).status_code == 202


async def test_concurrent_proactive_sends_never_exceed_the_cap(harness: Harness) -> None:
    channel = await harness.create_channel("whatsapp")
    put = await harness.client.put(
        f"/v1/channels/{channel}/frequency-cap",
        json={"max_messages": 3, "period_seconds": 600},
        headers=harness.admin(),
    )
    assert put.status_code == 200, put.text
    answers = await asyncio.gather(*(send(harness, template(channel)) for _ in range(12)))
    codes = sorted(a.status_code for a in answers)
    assert codes == [202] * 3 + [422] * 9
    assert {a.json()["error"]["code"] for a in answers if a.status_code == 422} == {
        "frequency_capped"
    }


async def test_frequency_cap_routes_check_the_channel(harness: Harness) -> None:
    missing = f"/v1/channels/{uuid.uuid4()}/frequency-cap"
    cap = {"max_messages": 1, "period_seconds": 60}
    for answer in (
        await harness.client.get(missing, headers=harness.admin()),
        await harness.client.put(missing, json=cap, headers=harness.admin()),
        await harness.client.delete(missing, headers=harness.admin()),
    ):
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "channel_not_found"
    assert ACCOUNTS["whatsapp"]  # the harness's channels use the gateway's accounts
