"""Typing indicators and read marks (send-command kinds ``typing`` and ``mark_read``): the wire
format each platform receives from the fake servers, the refusals, and their short lifetime."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from fake_platforms import FakePlatformServer
from outbox.contracts import SIGNAL_TTL_SECONDS, SendCommand, signal_not_after
from outbox.platforms import SENDERS, UnsupportedContent, make_http_client
from outbox.platforms.http import HttpClient
from tests.integration.outbox.test_api_messages import WA_USER, api, create_channel, send
from tests.integration.outbox.test_senders import channel, cmd, only
from tests.support import RunningApp

__all__ = ["api"]  # the fixture, shared with test_api_messages

pytestmark = pytest.mark.integration

WAMID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
TWILIO_IN = "SM" + "a" * 32
TYPING: dict[str, Any] = {"kind": "typing", "typing": {"message_id": WAMID}}
READ: dict[str, Any] = {"kind": "mark_read", "mark_read": {"message_id": WAMID}}


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[FakePlatformServer]:
    async with FakePlatformServer() as srv:
        yield srv


@pytest.fixture(scope="module")
async def client() -> AsyncIterator[HttpClient]:
    async with make_http_client(timeout=5.0) as c:
        yield c


@pytest.fixture(autouse=True)
def _clean(server: FakePlatformServer) -> None:
    server.reset()


async def _send(
    server: FakePlatformServer, client: HttpClient, platform: str, command: SendCommand
) -> Any:
    sender = SENDERS[platform]
    sender.validate(command, account_id=channel(server, platform).account_id)
    return await sender.send(client, channel(server, platform), command, timeout=5.0)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (
            TYPING,
            {
                "messaging_product": "whatsapp",
                "status": "read",
                "message_id": WAMID,
                "typing_indicator": {"type": "text"},
            },
        ),
        (READ, {"messaging_product": "whatsapp", "status": "read", "message_id": WAMID}),
    ],
)
async def test_whatsapp_signals(
    server: FakePlatformServer, client: HttpClient, content: dict[str, Any], expected: Any
) -> None:
    result = await _send(server, client, "whatsapp", cmd("+393331234567", content))
    assert result.outcome == "sent"
    assert result.platform_message_id is None
    request = only(server)
    assert request.path == "/v21.0/106540352242922/messages"
    assert request.json == expected


def test_whatsapp_typing_needs_the_customers_message_id() -> None:
    with pytest.raises(UnsupportedContent, match=r"typing\.message_id"):
        SENDERS["whatsapp"].validate(cmd("+393331234567", {"kind": "typing", "typing": {}}))


@pytest.mark.parametrize("platform", ["messenger", "instagram"])
@pytest.mark.parametrize(
    ("content", "action"),
    [({"kind": "typing", "typing": {}}, "typing_on"), (READ, "mark_seen")],
)
async def test_meta_sender_actions(
    server: FakePlatformServer,
    client: HttpClient,
    platform: str,
    content: dict[str, Any],
    action: str,
) -> None:
    result = await _send(server, client, platform, cmd("6101234567890123", content))
    assert result.outcome == "sent"
    assert only(server).json == {"recipient": {"id": "6101234567890123"}, "sender_action": action}


async def test_telegram_typing_is_a_chat_action_and_read_marks_are_refused(
    server: FakePlatformServer, client: HttpClient
) -> None:
    result = await _send(server, client, "telegram", cmd("42", {"kind": "typing", "typing": {}}))
    assert result.outcome == "sent"
    request = only(server)
    assert request.path.endswith("/sendChatAction")
    assert request.json == {"chat_id": 42, "action": "typing"}
    with pytest.raises(UnsupportedContent, match="cannot mark messages as read"):
        SENDERS["telegram"].validate(cmd("42", READ))


async def test_twilio_whatsapp_typing_uses_the_typing_indicator_resource(
    server: FakePlatformServer, client: HttpClient
) -> None:
    typing = {"kind": "typing", "typing": {"message_id": TWILIO_IN}}
    twilio = SENDERS["twilio"]
    with pytest.raises(UnsupportedContent, match="WhatsApp senders only"):
        twilio.validate(cmd("+15558675310", typing), account_id="+15550000000")
    with pytest.raises(UnsupportedContent, match="no read-mark API"):
        twilio.validate(cmd("whatsapp:+15558675310", READ), account_id="whatsapp:+15550000000")
    with pytest.raises(UnsupportedContent, match="SID"):
        twilio.validate(cmd("whatsapp:+15558675310", TYPING), account_id="whatsapp:+1555")

    config = channel(server, "twilio")
    result = await twilio.send(client, config, cmd("whatsapp:+15558675310", typing), timeout=5.0)
    assert result.outcome == "sent"
    request = only(server)
    assert request.path == "/v2/Indicators/Typing.json"
    assert request.form == {"channel": ["whatsapp"], "messageId": [TWILIO_IN]}
    assert request.headers["Authorization"].startswith("Basic ")


def test_signals_quote_nothing() -> None:
    with pytest.raises(ValidationError, match="drop reply_to"):
        cmd("+393331234567", READ, reply_to="wamid.X")
    with pytest.raises(ValidationError, match=r"content\.mark_read is missing"):
        cmd("+393331234567", {"kind": "mark_read"})


def test_signals_expire_within_seconds_whatever_was_asked() -> None:
    now = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
    default = now + timedelta(hours=24)
    cap = now + timedelta(seconds=SIGNAL_TTL_SECONDS)
    assert signal_not_after(cmd("+1", TYPING), now, default) == cap
    later = (now + timedelta(hours=2)).isoformat()
    assert signal_not_after(cmd("+1", READ, not_after=later), now, default) == cap
    sooner = now + timedelta(seconds=3)
    assert signal_not_after(cmd("+1", READ, not_after=sooner.isoformat()), now, default) == sooner
    text = cmd("+1", {"kind": "text", "text": "hi"})
    assert signal_not_after(text, now, default) == default


async def test_api_accepts_signals_with_a_short_life_and_refuses_what_a_platform_lacks(
    api: RunningApp,
) -> None:
    whatsapp = await create_channel(api)
    telegram = await create_channel(api, "telegram")
    before = datetime.now(UTC)
    typing = await send(api, {"channel_id": whatsapp, "to": WA_USER, "content": TYPING}, key="t1")
    assert typing.status_code == 202, typing.text
    not_after = datetime.fromisoformat(typing.json()["not_after"])
    assert not_after <= datetime.now(UTC) + timedelta(seconds=SIGNAL_TTL_SECONDS)
    assert not_after >= before + timedelta(seconds=SIGNAL_TTL_SECONDS)

    refused = await send(api, {"channel_id": telegram, "to": "42", "content": READ}, key="t2")
    assert refused.status_code == 422, refused.text
    assert "cannot mark messages as read" in refused.text


async def test_telegram_callback_answer(server: FakePlatformServer, client: HttpClient) -> None:
    content = {
        "kind": "callback_answer",
        "callback_answer": {"callback_query_id": "4382bfdwdsb323b2d9", "text": "Done"},
    }
    result = await _send(server, client, "telegram", cmd("42", content))
    assert result.outcome == "sent"
    request = only(server)
    assert request.path.endswith("/answerCallbackQuery")
    assert request.json == {"callback_query_id": "4382bfdwdsb323b2d9", "text": "Done"}
    for platform, to in (("whatsapp", "+393331234567"), ("messenger", "1"), ("twilio", "+1555")):
        with pytest.raises(UnsupportedContent, match="Telegram button presses only"):
            SENDERS[platform].validate(cmd(to, content), account_id="+15550000000")
