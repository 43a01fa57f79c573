"""Conversations and their timelines, fed by signed webhooks through the gateway and by
lifecycle events on the outbound events topic: one conversation per customer whatever the
platform's spelling of the recipient, messages interleaved in time order, cursor paging."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.conversations.conftest import Harness, eventually
from tests.integration.gateway.conftest import ACCOUNTS

pytestmark = pytest.mark.integration

WA_CONVERSATION = f"whatsapp:{ACCOUNTS['whatsapp']}:393331234567"


async def test_whatsapp_inbound_and_outbound_interleave_in_one_conversation(
    harness: Harness,
) -> None:
    await harness.create_channel("whatsapp")
    now = int(time.time())
    await harness.whatsapp("wamid.A", "393331234567", "hello", ts=now - 60)
    await eventually(lambda: _timeline_len(harness, WA_CONVERSATION, 1))
    # The outbox names the customer as the client wrote `to`: formatted, with a plus.
    sent_at = datetime.fromtimestamp(now - 30, UTC)
    for event_type in ("message.queued", "message.sent", "message.delivered"):
        await harness.lifecycle(
            event_type,
            platform="whatsapp",
            to="+39 333 1234567",
            message_id="out-1",
            platform_message_id="wamid.OUT1" if event_type != "message.queued" else None,
            at=sent_at,
        )
    await eventually(lambda: _state_of(harness, WA_CONVERSATION, "out-1", "delivered"))
    await harness.whatsapp("wamid.B", "393331234567", "are you there?", ts=now)
    await eventually(lambda: _timeline_len(harness, WA_CONVERSATION, 3))

    page = await harness.timeline(WA_CONVERSATION)
    assert [(m["direction"], m["message_id"]) for m in page["items"]] == [
        ("inbound", "wamid.A"),
        ("outbound", "out-1"),
        ("inbound", "wamid.B"),
    ]
    assert page["items"][0]["text"] == "hello"
    assert page["items"][1]["state"] == "delivered"
    assert page["items"][1]["platform_message_id"] == "wamid.OUT1"
    assert page["next_cursor"] is None

    listed = await harness.conversations(channel_id=harness.channels["whatsapp"])
    assert [c["conversation_id"] for c in listed["items"]] == [WA_CONVERSATION]
    conversation = listed["items"][0]
    assert conversation["contact"]["name"] == "Sheena"
    assert conversation["contact_id"] == "393331234567"
    assert conversation["state"] == "open"  # the second message waits for a reply
    assert conversation["last_outbound_at"] is not None
    assert conversation["unanswered_since"] is not None
    assert conversation["opted_out"] is False

    walked: list[str] = []
    cursor = None
    while True:
        params = {"limit": 1} if cursor is None else {"limit": 1, "cursor": cursor}
        chunk = await harness.timeline(WA_CONVERSATION, **params)
        walked += [m["message_id"] for m in chunk["items"]]
        cursor = chunk["next_cursor"]
        if cursor is None:
            break
    assert walked == ["wamid.A", "out-1", "wamid.B"]


async def test_a_redelivered_webhook_adds_nothing(harness: Harness) -> None:
    await harness.create_channel("whatsapp")
    await harness.whatsapp("wamid.DUP", "393331234567", "once")
    await eventually(lambda: _timeline_len(harness, WA_CONVERSATION, 1))
    await harness.whatsapp("wamid.DUP", "393331234567", "once")
    await harness.whatsapp("wamid.NEXT", "393331234567", "twice")
    await eventually(lambda: _timeline_len(harness, WA_CONVERSATION, 2))
    page = await harness.timeline(WA_CONVERSATION)
    assert [m["message_id"] for m in page["items"]] == ["wamid.DUP", "wamid.NEXT"]


@pytest.mark.parametrize(
    ("platform", "to", "conversation_id"),
    [
        ("telegram", "42", f"telegram:{ACCOUNTS['telegram']}:42"),
        ("twilio", "+15557654321", f"twilio:{ACCOUNTS['twilio']}:+15557654321"),
    ],
)
async def test_outbound_maps_to_the_inbound_conversation(
    harness: Harness, platform: str, to: str, conversation_id: str
) -> None:
    await harness.create_channel(platform)
    if platform == "telegram":
        await harness.telegram(7, 42, "hi bot")
    else:
        await harness.twilio("SM" + "1" * 32, "+15557654321", "hi sms")
    await eventually(lambda: _timeline_len(harness, conversation_id, 1))
    await harness.lifecycle("message.sent", platform=platform, to=to, message_id="out-9")
    await eventually(lambda: _timeline_len(harness, conversation_id, 2))
    listed = await harness.conversations(channel_id=harness.channels[platform])
    assert [c["conversation_id"] for c in listed["items"]] == [conversation_id]
    assert listed["items"][0]["state"] == "answered"


async def test_a_proactive_send_opens_the_conversation_the_customer_later_writes_in(
    harness: Harness,
) -> None:
    await harness.create_channel("whatsapp")
    await harness.lifecycle(
        "message.sent", platform="whatsapp", to="393331234567", message_id="campaign-1"
    )
    await eventually(lambda: _timeline_len(harness, WA_CONVERSATION, 1))
    await harness.whatsapp("wamid.R", "393331234567", "what is this offer?")
    await eventually(lambda: _timeline_len(harness, WA_CONVERSATION, 2))
    listed = await harness.conversations()
    assert len(listed["items"]) == 1


async def test_filters_paging_and_errors(harness: Harness) -> None:
    await harness.create_channel("telegram")
    for chat in (1, 2, 3):
        await harness.telegram(100 + chat, chat, f"hello from {chat}")
    await eventually(lambda: _count(harness, 3))
    await harness.lifecycle("message.sent", platform="telegram", to="2", message_id="r-2")
    await eventually(lambda: _count(harness, 1, state="answered"))
    assert len((await harness.conversations(state="open"))["items"]) == 2
    assert (await harness.conversations(state="unanswered"))["items"] == []

    ids: list[str] = []
    cursor = None
    while True:
        params = {"limit": 2} if cursor is None else {"limit": 2, "cursor": cursor}
        page = await harness.conversations(**params)
        ids += [c["conversation_id"] for c in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(ids) == sorted(f"telegram:{ACCOUNTS['telegram']}:{c}" for c in (1, 2, 3))
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    assert (await harness.conversations(active_after=future))["items"] == []

    bad = await harness.client.get(
        "/v1/conversations", params={"cursor": "not-a-cursor"}, headers=harness.admin()
    )
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_cursor"
    missing = await harness.client.get(
        "/v1/conversations/telegram:1:nobody/messages", headers=harness.admin()
    )
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "conversation_not_found"
    assert (await harness.client.get("/v1/conversations")).status_code == 401


async def _timeline_len(harness: Harness, conversation_id: str, n: int) -> bool:
    response = await harness.client.get(
        f"/v1/conversations/{conversation_id}/messages", headers=harness.admin()
    )
    return response.status_code == 200 and len(response.json()["items"]) >= n


async def _state_of(harness: Harness, conversation_id: str, message_id: str, state: str) -> bool:
    page = await harness.timeline(conversation_id)
    return any(m["message_id"] == message_id and m["state"] == state for m in page["items"])


async def _count(harness: Harness, n: int, **params: str) -> bool:
    return len((await harness.conversations(**params))["items"]) >= n


async def test_scopes(harness: Harness) -> None:
    channel = await harness.create_channel("telegram")
    created = await harness.client.post(
        "/v1/api-keys", json={"name": "dashboard", "scopes": ["read"]}, headers=harness.admin()
    )
    assert created.status_code == 201, created.text
    reader = harness.app.auth(created.json()["key"])
    assert (await harness.client.get("/v1/conversations", headers=reader)).status_code == 200
    opt_outs = await harness.client.get(f"/v1/channels/{channel}/opt-outs", headers=reader)
    assert opt_outs.status_code == 200
    for method, path in (
        ("PUT", f"/v1/channels/{channel}/auto-reply"),
        ("GET", f"/v1/channels/{channel}/auto-reply"),
        ("PUT", f"/v1/channels/{channel}/conversation-settings"),
        ("PUT", f"/v1/channels/{channel}/opt-outs/42"),
        ("DELETE", f"/v1/channels/{channel}/opt-outs/42"),
    ):
        refused = await harness.client.request(method, path, headers=reader, json={})
        assert refused.status_code == 403, (method, path)
        assert refused.json()["error"]["code"] == "forbidden"


async def test_retention_counts_from_when_we_recorded_not_the_platform_date(
    harness: Harness,
) -> None:
    from conversations.worker import retention_pass

    await harness.create_channel("telegram")
    await harness.telegram(5, 42, "an old-dated message")  # dated 2023 by the payload
    conversation_id = f"telegram:{ACCOUNTS['telegram']}:42"
    await eventually(lambda: _timeline_len(harness, conversation_id, 1))
    await retention_pass(harness.app.resources, datetime.now(UTC))
    listed = await harness.conversations()
    assert [c["conversation_id"] for c in listed["items"]] == [conversation_id]
    last_activity = datetime.fromisoformat(listed["items"][0]["last_activity_at"])
    assert last_activity > datetime.now(UTC) - timedelta(hours=1)
    await retention_pass(harness.app.resources, datetime.now(UTC) + timedelta(days=91))
    assert (await harness.conversations())["items"] == []


async def test_a_conversation_opened_by_a_send_takes_the_normalizers_id(harness: Harness) -> None:
    """A Twilio channel sending through a Messaging Service (account id ``MG…``) names the
    conversation of a proactive send ``twilio:MG…:<to>``; the customer's reply is addressed to
    the number itself. The conversation takes the canonical id, its timeline follows."""
    from tests.integration.gateway.conftest import channel_body

    body = {**channel_body("twilio"), "account_id": "MG" + "0" * 32}
    created = await harness.client.post("/v1/channels", json=body, headers=harness.admin())
    assert created.status_code == 201, created.text
    harness.channels["twilio"] = str(created.json()["id"])
    customer = "+15557654321"
    await harness.lifecycle("message.sent", platform="twilio", to=customer, message_id="promo")
    provisional = f"twilio:MG{'0' * 32}:{customer}"
    await eventually(lambda: _timeline_len(harness, provisional, 1))
    await harness.twilio("SM" + "e" * 32, customer, "who is this?", to="+15551234567")
    canonical = f"twilio:+15551234567:{customer}"
    await eventually(lambda: _timeline_len(harness, canonical, 2))
    page = await harness.timeline(canonical)
    assert [m["message_id"] for m in page["items"]] == ["promo", "SM" + "e" * 32]
    listed = await harness.conversations()
    assert [c["conversation_id"] for c in listed["items"]] == [canonical]
    missing = await harness.client.get(
        f"/v1/conversations/{provisional}/messages", headers=harness.admin()
    )
    assert missing.status_code == 404
