"""Opt-out: "STOP" by SMS opts the contact out (``contact.opted_out``), "START" opts it in
again; configured keywords; platform signals (Twilio 21610 on a failed send, Telegram's
"bot blocked"); the opt-outs API for imports and corrections, idempotent."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.conversations.conftest import Harness, TopicReader
from tests.integration.gateway.conftest import ACCOUNTS

pytestmark = pytest.mark.integration

CUSTOMER = "+15557654321"
CONVERSATION = f"twilio:{ACCOUNTS['twilio']}:{CUSTOMER}"


async def _opt_outs(harness: Harness, platform: str) -> list[str]:
    response = await harness.client.get(
        f"/v1/channels/{harness.channels[platform]}/opt-outs", headers=harness.admin()
    )
    assert response.status_code == 200, response.text
    return [o["contact_id"] for o in response.json()["items"]]


async def test_stop_then_start_by_sms(harness: Harness, conversation_events: TopicReader) -> None:
    await harness.create_channel("twilio")
    await harness.twilio("SM" + "a" * 32, CUSTOMER, "Stop")
    await conversation_events.until(lambda _: conversation_events.of_type("contact.opted_out"))
    assert await _opt_outs(harness, "twilio") == [CUSTOMER]
    listed = await harness.conversations()
    assert listed["items"][0]["opted_out"] is True
    assert listed["items"][0]["state"] == "answered"  # a keyword opens no episode
    opted_out = conversation_events.of_type("contact.opted_out")[0]
    assert opted_out["key"] == CONVERSATION
    assert opted_out["data"]["source"] == "keyword"
    assert opted_out["data"]["reason"] == "STOP"
    assert opted_out["data"]["contact_id"] == CUSTOMER

    await harness.twilio("SM" + "b" * 32, CUSTOMER, "START")
    await conversation_events.until(lambda _: conversation_events.of_type("contact.opted_in"))
    assert await _opt_outs(harness, "twilio") == []
    assert (await harness.conversations())["items"][0]["opted_out"] is False


async def test_configured_keywords_replace_the_defaults(
    harness: Harness, conversation_events: TopicReader
) -> None:
    channel = await harness.create_channel("twilio")
    response = await harness.client.put(
        f"/v1/channels/{channel}/conversation-settings",
        json={"opt_out_keywords": ["BASTA", "ARRET"], "opt_in_keywords": ["INIZIA"]},
        headers=harness.admin(),
    )
    assert response.status_code == 200, response.text
    await harness.twilio("SM" + "c" * 32, CUSTOMER, "stop")  # no longer a keyword here
    await harness.twilio("SM" + "d" * 32, CUSTOMER, "basta")
    await conversation_events.until(lambda _: conversation_events.of_type("contact.opted_out"))
    timeline = await harness.timeline(CONVERSATION)
    assert [m["text"] for m in timeline["items"]] == ["stop", "basta"]
    assert len(conversation_events.of_type("contact.opted_out")) == 1


async def test_platform_signals(harness: Harness, conversation_events: TopicReader) -> None:
    await harness.create_channel("twilio")
    await harness.lifecycle(
        "message.failed",
        platform="twilio",
        to=CUSTOMER,
        message_id="promo-1",
        error={
            "code": "21610",
            "title": "Attempt to send to unsubscribed recipient",
            "retryable": False,
        },
    )
    await conversation_events.until(lambda _: conversation_events.of_type("contact.opted_out"))
    event = conversation_events.of_type("contact.opted_out")[0]
    assert event["data"]["source"] == "platform"
    assert event["data"]["reason"] == "twilio_21610_unsubscribed"
    assert await _opt_outs(harness, "twilio") == [CUSTOMER]


async def test_api_imports_and_corrections_are_idempotent(
    harness: Harness, conversation_events: TopicReader, engine: AsyncEngine
) -> None:
    channel = await harness.create_channel("whatsapp")
    path = f"/v1/channels/{channel}/opt-outs/+39%20333%201234567"
    for _ in range(2):
        put = await harness.client.put(path, json={"reason": "CRM import"}, headers=harness.admin())
        assert put.status_code == 200, put.text
        assert put.json()["contact_id"] == "393331234567"  # WhatsApp numbers compare by digits
        assert put.json()["source"] == "api"
        assert put.json()["reason"] == "CRM import"
    assert await _opt_outs(harness, "whatsapp") == ["393331234567"]
    for _ in range(2):
        deleted = await harness.client.delete(path, headers=harness.admin())
        assert deleted.status_code == 204
    assert await _opt_outs(harness, "whatsapp") == []
    await conversation_events.until(lambda _: conversation_events.of_type("contact.opted_in"))
    async with engine.connect() as conn:
        rows = await conn.scalar(text("SELECT count(*) FROM conv_events"))
    assert rows == 2  # one opted_out, one opted_in: repeats change nothing

    unknown = await harness.client.put(
        "/v1/channels/00000000-0000-0000-0000-000000000000/opt-outs/x", headers=harness.admin()
    )
    assert unknown.status_code == 404
    nul = await harness.client.put(
        f"/v1/channels/{channel}/opt-outs/a%00b", headers=harness.admin()
    )
    assert nul.status_code == 422
    assert nul.json()["error"]["code"] == "invalid_contact_id"
    assert (await harness.client.put(path)).status_code == 401


async def test_telegram_blocked_bot_opts_out(
    harness: Harness, conversation_events: TopicReader
) -> None:
    import orjson

    from tests.integration.gateway.conftest import telegram_headers

    await harness.create_channel("telegram")
    body = orjson.dumps(
        {
            "update_id": 77,
            "my_chat_member": {
                "chat": {"id": 42, "type": "private"},
                "from": {"id": 42, "is_bot": False, "first_name": "T"},
                "date": 1700000000,
                "old_chat_member": {"status": "member", "user": {"id": 1, "is_bot": True}},
                "new_chat_member": {"status": "kicked", "user": {"id": 1, "is_bot": True}},
            },
        }
    )
    response = await harness.client.post(
        f"/webhooks/telegram/{harness.channels['telegram']}",
        content=body,
        headers=telegram_headers(),
    )
    assert response.status_code == 200
    await conversation_events.until(lambda _: conversation_events.of_type("contact.opted_out"))
    assert await _opt_outs(harness, "telegram") == ["42"]


async def test_whatsapp_marketing_opt_out_receipt(
    harness: Harness, conversation_events: TopicReader
) -> None:
    import orjson

    from tests.integration.gateway.conftest import meta_headers

    await harness.create_channel("whatsapp")
    body = orjson.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": "WABA1",
                    "changes": [
                        {
                            "field": "messages",
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": "15550783881",
                                    "phone_number_id": ACCOUNTS["whatsapp"],
                                },
                                "statuses": [
                                    {
                                        "id": "wamid.PROMO",
                                        "status": "failed",
                                        "timestamp": "1749416383",
                                        "recipient_id": "393331234567",
                                        "errors": [
                                            {
                                                "code": 131050,
                                                "title": "User has stopped marketing messages",
                                            }
                                        ],
                                    }
                                ],
                            },
                        }
                    ],
                }
            ],
        }
    )
    response = await harness.client.post(
        f"/webhooks/whatsapp/{harness.channels['whatsapp']}",
        content=body,
        headers=meta_headers(body),
    )
    assert response.status_code == 200
    await conversation_events.until(lambda _: conversation_events.of_type("contact.opted_out"))
    event = conversation_events.of_type("contact.opted_out")[0]
    assert event["data"]["reason"] == "whatsapp_131050_marketing_opt_out"
    assert event["key"] == f"whatsapp:{ACCOUNTS['whatsapp']}:393331234567"
    assert await _opt_outs(harness, "whatsapp") == ["393331234567"]
