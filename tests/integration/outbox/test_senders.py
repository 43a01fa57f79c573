"""Each sender against the fake platform servers: the wire format the platform receives, and
how every failure mode is classified."""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from fake_platforms import FakePlatformServer, Fault, RecordedRequest
from outbox.contracts import SendCommand
from outbox.platforms import (
    SENDERS,
    ChannelConfig,
    SendResult,
    UnsupportedContent,
    make_http_client,
)
from outbox.platforms.base import MAX_RETRY_AFTER
from outbox.platforms.http import HttpClient

pytestmark = pytest.mark.integration

WA_TOKEN = "EAAGwa-token-0123456789abcdef"
PAGE_TOKEN = "EAAGpage-token-0123456789abcdef"
BOT_TOKEN = "7000000001:AAH-bot-token-0123456789abcdef"
TWILIO_SID = "AC" + "1" * 32
TWILIO_TOKEN = "twilio-auth-token-0123456789abcdef"
SECRETS = (WA_TOKEN, PAGE_TOKEN, BOT_TOKEN, TWILIO_TOKEN)
HX = "HX" + "a" * 32


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


def channel(
    server: FakePlatformServer, platform: str, base_url: str | None = None
) -> ChannelConfig:
    account, creds = {
        "whatsapp": ("106540352242922", {"access_token": WA_TOKEN}),
        "messenger": ("1122334455", {"access_token": PAGE_TOKEN}),
        "instagram": ("17841400000000", {"access_token": PAGE_TOKEN}),
        "telegram": ("7000000001", {"bot_token": BOT_TOKEN}),
        "twilio": ("+15550000000", {"account_sid": TWILIO_SID, "auth_token": TWILIO_TOKEN}),
    }[platform]
    return ChannelConfig(
        id=f"ch-{platform}",
        platform=platform,
        account_id=account,
        credentials=creds,
        api_base_url=base_url or server.base_url,
    )


def cmd(to: str, content: dict[str, Any], **extra: Any) -> SendCommand:
    return SendCommand.model_validate(
        {"id": "cmd-1", "channel_id": "ch", "to": to, "content": content, **extra}
    )


async def send(
    server: FakePlatformServer,
    client: HttpClient,
    platform: str,
    command: SendCommand,
    *,
    deadline: float = 5.0,
    base_url: str | None = None,
) -> SendResult:
    result = await SENDERS[platform].send(
        client, channel(server, platform, base_url), command, timeout=deadline
    )
    text = repr(result)
    for secret in SECRETS:
        assert secret not in text
    return result


def only(server: FakePlatformServer) -> RecordedRequest:
    assert len(server.requests) == 1
    return server.requests[0]


TEXT = {"kind": "text", "text": "Your order shipped: https://x.test/o/1"}
BUTTONS3 = {
    "kind": "interactive",
    "interactive": {
        "body": "Rate us",
        "buttons": [{"id": f"r{i}", "title": f"{i}★"} for i in (1, 2, 3)],
    },
}
BUTTONS4 = {
    "kind": "interactive",
    "interactive": {
        "body": "Pick",
        "buttons": [{"id": f"o{i}", "title": f"Option {i}"} for i in range(4)],
    },
}

WA_BASE = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": "+393331234567"}
WA_CASES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (TEXT, {}, {"type": "text", "text": {"body": TEXT["text"], "preview_url": True}}),
    (
        {"kind": "text", "text": "plain"},
        {"reply_to": "wamid.IN1"},
        {
            "type": "text",
            "text": {"body": "plain", "preview_url": False},
            "context": {"message_id": "wamid.IN1"},
        },
    ),
    (
        {"kind": "media", "media": {"kind": "image", "id": "1013859600285441", "caption": "look"}},
        {},
        {"type": "image", "image": {"id": "1013859600285441", "caption": "look"}},
    ),
    (
        {
            "kind": "media",
            "media": {"kind": "document", "url": "https://x.test/i.pdf", "filename": "i.pdf"},
        },
        {},
        {"type": "document", "document": {"link": "https://x.test/i.pdf", "filename": "i.pdf"}},
    ),
    (
        {
            "kind": "template",
            "template": {
                "name": "order_update",
                "language": "it",
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "42"}]}],
            },
        },
        {},
        {
            "type": "template",
            "template": {
                "name": "order_update",
                "language": {"code": "it"},
                "components": [{"type": "body", "parameters": [{"type": "text", "text": "42"}]}],
            },
        },
    ),
    (
        BUTTONS3,
        {},
        {
            "type": "interactive",
            "interactive": {
                "type": "button",
                "body": {"text": "Rate us"},
                "action": {
                    "buttons": [
                        {"type": "reply", "reply": {"id": f"r{i}", "title": f"{i}★"}}
                        for i in (1, 2, 3)
                    ]
                },
            },
        },
    ),
    (
        BUTTONS4,
        {"metadata": {"whatsapp_list_button": "Choose"}},
        {
            "type": "interactive",
            "interactive": {
                "type": "list",
                "body": {"text": "Pick"},
                "action": {
                    "button": "Choose",
                    "sections": [
                        {"rows": [{"id": f"o{i}", "title": f"Option {i}"} for i in range(4)]}
                    ],
                },
            },
        },
    ),
    (
        {"kind": "reaction", "reaction": {"message_id": "wamid.IN1", "emoji": "👍"}},
        {},
        {"type": "reaction", "reaction": {"message_id": "wamid.IN1", "emoji": "👍"}},
    ),
]


@pytest.mark.parametrize(("content", "extra", "expected"), WA_CASES)
async def test_whatsapp_wire_format(
    server: FakePlatformServer,
    client: HttpClient,
    content: dict[str, Any],
    extra: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    result = await send(server, client, "whatsapp", cmd("+393331234567", content, **extra))
    assert result.outcome == "sent"
    assert result.platform_message_id is not None
    assert result.platform_message_id.startswith("wamid.")
    request = only(server)
    assert request.path == "/v21.0/106540352242922/messages"
    assert request.headers["Authorization"] == f"Bearer {WA_TOKEN}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {**WA_BASE, **expected}


MSG_CASES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        "messenger",
        TEXT,
        {},
        {"messaging_type": "RESPONSE", "message": {"text": TEXT["text"]}},
    ),
    (
        "messenger",
        {"kind": "text", "text": "We are back"},
        {"metadata": {"message_tag": "HUMAN_AGENT"}},
        {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT", "message": {"text": "We are back"}},
    ),
    (
        "messenger",
        {"kind": "media", "media": {"kind": "document", "url": "https://x.test/i.pdf"}},
        {},
        {
            "messaging_type": "RESPONSE",
            "message": {
                "attachment": {
                    "type": "file",
                    "payload": {"url": "https://x.test/i.pdf", "is_reusable": True},
                }
            },
        },
    ),
    (
        "instagram",
        {"kind": "media", "media": {"kind": "image", "id": "987654"}},
        {},
        {
            "messaging_type": "RESPONSE",
            "message": {"attachment": {"type": "image", "payload": {"attachment_id": "987654"}}},
        },
    ),
    (
        "messenger",
        BUTTONS4,
        {},
        {
            "messaging_type": "RESPONSE",
            "message": {
                "text": "Pick",
                "quick_replies": [
                    {"content_type": "text", "title": f"Option {i}", "payload": f"o{i}"}
                    for i in range(4)
                ],
            },
        },
    ),
    (
        "messenger",
        {"kind": "reaction", "reaction": {"message_id": "m_IN1", "emoji": "😊"}},
        {},
        {"sender_action": "react", "payload": {"message_id": "m_IN1", "reaction": "😊"}},
    ),
    (
        "instagram",
        {"kind": "reaction", "reaction": {"message_id": "m_IN1", "emoji": "❤️"}},
        {},
        {"sender_action": "react", "payload": {"message_id": "m_IN1", "reaction": "love"}},
    ),
    (
        "instagram",
        {"kind": "reaction", "reaction": {"message_id": "m_IN1", "emoji": ""}},
        {},
        {"sender_action": "unreact", "payload": {"message_id": "m_IN1"}},
    ),
]


@pytest.mark.parametrize(("platform", "content", "extra", "expected"), MSG_CASES)
async def test_messenger_and_instagram_wire_format(
    server: FakePlatformServer,
    client: HttpClient,
    platform: str,
    content: dict[str, Any],
    extra: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    result = await send(server, client, platform, cmd("PSID-1", content, **extra))
    assert result.outcome == "sent"
    request = only(server)
    account = channel(server, platform).account_id
    assert request.path == f"/v21.0/{account}/messages"
    assert request.headers["Authorization"] == f"Bearer {PAGE_TOKEN}"
    assert request.json == {"recipient": {"id": "PSID-1"}, **expected}
    if "message" in expected:
        assert result.platform_message_id is not None
        assert result.platform_message_id.startswith("m_")


TG_CASES: list[tuple[str, dict[str, Any], dict[str, Any], str, dict[str, Any]]] = [
    ("12345", TEXT, {}, "sendMessage", {"chat_id": 12345, "text": TEXT["text"]}),
    (
        "-1001234567890",
        {"kind": "text", "text": "hi"},
        {"reply_to": "77"},
        "sendMessage",
        {"chat_id": -1001234567890, "text": "hi", "reply_parameters": {"message_id": 77}},
    ),
    (
        "12345",
        {"kind": "media", "media": {"kind": "image", "id": "AgACAgIAAxkBAAIB", "caption": "c"}},
        {},
        "sendPhoto",
        {"chat_id": 12345, "photo": "AgACAgIAAxkBAAIB", "caption": "c"},
    ),
    (
        "12345",
        {"kind": "media", "media": {"kind": "document", "url": "https://x.test/i.pdf"}},
        {},
        "sendDocument",
        {"chat_id": 12345, "document": "https://x.test/i.pdf"},
    ),
    (
        "12345",
        {"kind": "media", "media": {"kind": "audio", "id": "A1"}},
        {},
        "sendAudio",
        {"chat_id": 12345, "audio": "A1"},
    ),
    (
        "12345",
        {"kind": "media", "media": {"kind": "audio", "id": "V1"}},
        {"metadata": {"telegram_voice": True}},
        "sendVoice",
        {"chat_id": 12345, "voice": "V1"},
    ),
    (
        "12345",
        {"kind": "media", "media": {"kind": "video", "id": "F1"}},
        {},
        "sendVideo",
        {"chat_id": 12345, "video": "F1"},
    ),
    (
        "@news",
        {"kind": "media", "media": {"kind": "sticker", "id": "S1"}},
        {},
        "sendSticker",
        {"chat_id": "@news", "sticker": "S1"},
    ),
    (
        "12345",
        BUTTONS3,
        {},
        "sendMessage",
        {
            "chat_id": 12345,
            "text": "Rate us",
            "reply_markup": {
                "inline_keyboard": [
                    [{"text": f"{i}★", "callback_data": f"r{i}"}] for i in (1, 2, 3)
                ]
            },
        },
    ),
    (
        "12345",
        {"kind": "reaction", "reaction": {"message_id": "77", "emoji": "👍"}},
        {},
        "setMessageReaction",
        {"chat_id": 12345, "message_id": 77, "reaction": [{"type": "emoji", "emoji": "👍"}]},
    ),
    (  # U+FE0F dropped: Telegram lists the heart as a bare U+2764
        "12345",
        {"kind": "reaction", "reaction": {"message_id": "77", "emoji": "\u2764\ufe0f"}},
        {},
        "setMessageReaction",
        {"chat_id": 12345, "message_id": 77, "reaction": [{"type": "emoji", "emoji": "\u2764"}]},
    ),
    (
        "12345",
        {"kind": "reaction", "reaction": {"message_id": "77", "emoji": ""}},
        {},
        "setMessageReaction",
        {"chat_id": 12345, "message_id": 77, "reaction": []},
    ),
]


@pytest.mark.parametrize(("to", "content", "extra", "method", "expected"), TG_CASES)
async def test_telegram_wire_format(
    server: FakePlatformServer,
    client: HttpClient,
    to: str,
    content: dict[str, Any],
    extra: dict[str, Any],
    method: str,
    expected: dict[str, Any],
) -> None:
    result = await send(server, client, "telegram", cmd(to, content, **extra))
    assert result.outcome == "sent"
    request = only(server)
    assert request.path == f"/bot{BOT_TOKEN}/{method}"
    assert request.json == expected
    if method != "setMessageReaction":
        assert result.platform_message_id is not None
        assert result.platform_message_id.isdigit()


WA_TO = "whatsapp:+393331234567"
TW_CASES: list[tuple[str, str, dict[str, Any], dict[str, list[str]]]] = [
    ("whatsapp:+15550000000", WA_TO, TEXT, {"Body": [TEXT["text"]]}),
    ("+15550000000", "+393331234567", TEXT, {"Body": [TEXT["text"]]}),  # SMS
    (
        "whatsapp:+15550000000",
        WA_TO,
        {
            "kind": "media",
            "media": {"kind": "image", "url": "https://x.test/a.png", "caption": "c"},
        },
        {"MediaUrl": ["https://x.test/a.png"], "Body": ["c"]},
    ),
    (
        "MG" + "2" * 32,
        WA_TO,
        {
            "kind": "template",
            "template": {
                "name": HX,
                "language": "en",
                "components": [
                    {
                        "type": "body",
                        "parameters": [
                            {"type": "text", "text": "Ada"},
                            {"type": "text", "text": "42"},
                        ],
                    }
                ],
            },
        },
        {"ContentSid": [HX], "ContentVariables": ['{"1":"Ada","2":"42"}']},
    ),
]


def twilio_channel(server: FakePlatformServer, sender: str) -> ChannelConfig:
    base = channel(server, "twilio")
    return ChannelConfig(base.id, "twilio", sender, base.credentials, base.api_base_url)


@pytest.mark.parametrize(("sender", "to", "content", "expected"), TW_CASES)
async def test_twilio_wire_format(
    server: FakePlatformServer,
    client: HttpClient,
    sender: str,
    to: str,
    content: dict[str, Any],
    expected: dict[str, list[str]],
) -> None:
    tw = twilio_channel(server, sender)
    result = await SENDERS["twilio"].send(client, tw, cmd(to, content), timeout=5)
    assert result.outcome == "sent"
    assert result.platform_message_id is not None
    assert result.platform_message_id.startswith("SM")
    request = only(server)
    assert request.path == f"/2010-04-01/Accounts/{TWILIO_SID}/Messages.json"
    basic = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    assert request.headers["Authorization"] == f"Basic {basic}"
    sender_field = (
        {"MessagingServiceSid": [sender]} if sender.startswith("MG") else {"From": [sender]}
    )
    assert request.form == {"To": [to], **sender_field, **expected}


@pytest.mark.parametrize(
    ("sender", "to"),
    [("whatsapp:+15550000000", "+393331234567"), ("+15550000000", WA_TO)],
)
async def test_twilio_never_sends_a_whatsapp_sms_mix(
    server: FakePlatformServer, client: HttpClient, sender: str, to: str
) -> None:
    """Twilio would answer 21910 (invalid From and To pair): refused before any request."""
    tw = twilio_channel(server, sender)
    with pytest.raises(UnsupportedContent, match="Twilio cannot send from"):
        await SENDERS["twilio"].send(client, tw, cmd(to, TEXT), timeout=5)
    assert server.requests == []


HELLO = {"kind": "text", "text": "hello"}


@pytest.mark.parametrize(
    (
        "platform",
        "to",
        "fault",
        "outcome",
        "code",
        "throttled",
        "recipient_throttled",
        "retry_after",
    ),
    [
        ("whatsapp", "+1", Fault.rate_limited(7), "retryable", "429", True, False, 7.0),
        (
            "whatsapp",
            "+1",
            Fault.platform_error(130429, "Rate limit hit"),
            "retryable",
            "130429",
            True,
            False,
            None,
        ),
        (
            "whatsapp",
            "+1",
            Fault.platform_error(131056, "pair rate limit"),
            "retryable",
            "131056",
            False,
            True,
            6.0,
        ),
        (
            "whatsapp",
            "+1",
            Fault.platform_error(131047, "Re-engagement message"),
            "permanent",
            "131047",
            False,
            False,
            None,
        ),
        (
            "whatsapp",
            "+1",
            Fault.platform_error(132001, "Template does not exist", status=404),
            "permanent",
            "132001",
            False,
            False,
            None,
        ),
        (
            "whatsapp",
            "+1",
            Fault.platform_error(190, "token expired", status=401),
            "permanent",
            "190",
            False,
            False,
            None,
        ),
        (
            "whatsapp",
            "+1",
            Fault.platform_error(131000, "Something went wrong", status=500),
            "retryable",
            "131000",
            False,
            False,
            None,
        ),
        (
            "whatsapp",
            "+1",
            Fault(status=502, body={"unexpected": True}),
            "retryable",
            "http_502",
            False,
            False,
            None,
        ),
        (
            "messenger",
            "P",
            Fault.platform_error(613, "Calls to this api have exceeded the rate limit"),
            "retryable",
            "613",
            True,
            False,
            None,
        ),
        (
            "messenger",
            "P",
            Fault.platform_error(551, "This person isn't available right now"),
            "permanent",
            "551",
            False,
            False,
            None,
        ),
        ("telegram", "1", Fault.rate_limited(12), "retryable", "429", True, False, 12.0),
        (
            "telegram",
            "1",
            Fault(status=403, code=403, message="Forbidden: bot was blocked by the user"),
            "permanent",
            "403",
            False,
            False,
            None,
        ),
        (
            "telegram",
            "1",
            Fault(status=400, code=400, message="Bad Request: chat not found"),
            "permanent",
            "400",
            False,
            False,
            None,
        ),
        ("telegram", "1", Fault.server_error(502), "retryable", "502", False, False, None),
        (
            "twilio",
            "+1",
            Fault.platform_error(20429, "Too Many Requests", status=429),
            "retryable",
            "20429",
            True,
            False,
            None,
        ),
        (
            "twilio",
            "+1",
            Fault.platform_error(21211, "Invalid 'To' Phone Number"),
            "permanent",
            "21211",
            False,
            False,
            None,
        ),
        (
            "twilio",
            "+1",
            Fault.platform_error(63016, "Outside messaging window"),
            "permanent",
            "63016",
            False,
            False,
            None,
        ),
        (
            "twilio",
            "+1",
            Fault.platform_error(14107, "Reply loop"),
            "retryable",
            "14107",
            False,
            True,
            30.0,
        ),
        ("twilio", "+1", Fault.server_error(503), "retryable", "503", False, False, None),
    ],
)
async def test_failures_are_classified(
    server: FakePlatformServer,
    client: HttpClient,
    platform: str,
    to: str,
    fault: Fault,
    outcome: str,
    code: str,
    throttled: bool,
    recipient_throttled: bool,
    retry_after: float | None,
) -> None:
    server.inject(fault)
    result = await send(server, client, platform, cmd(to, HELLO))
    assert result.outcome == outcome
    assert result.error_code == code
    assert result.throttled is throttled
    assert result.recipient_throttled is recipient_throttled
    assert result.retry_after == retry_after
    assert result.http_status == fault.status
    assert result.platform_message_id is None
    assert result.response_excerpt is not None
    assert len(result.response_excerpt) <= 1024


async def test_a_fault_is_consumed_then_the_next_send_succeeds(
    server: FakePlatformServer, client: HttpClient
) -> None:
    server.inject(Fault.server_error(503, platform="whatsapp", times=2))
    outcomes = [
        (await send(server, client, "whatsapp", cmd("+1", HELLO))).outcome for _ in range(3)
    ]
    assert outcomes == ["retryable", "retryable", "sent"]
    assert [r.status for r in server.requests] == [503, 503, 200]


async def test_faults_match_by_recipient(server: FakePlatformServer, client: HttpClient) -> None:
    server.inject(Fault.platform_error(131026, "undeliverable", recipient="+2", times=None))
    assert (await send(server, client, "whatsapp", cmd("+1", HELLO))).outcome == "sent"
    assert (await send(server, client, "whatsapp", cmd("+2", HELLO))).outcome == "permanent"
    assert (await send(server, client, "whatsapp", cmd("+2", HELLO))).outcome == "permanent"


async def test_a_hanging_platform_is_a_retryable_timeout(
    server: FakePlatformServer, client: HttpClient
) -> None:
    server.inject(Fault.hang_up(platform="telegram"))
    result = await send(server, client, "telegram", cmd("1", HELLO), deadline=0.2)
    assert result.outcome == "retryable"
    assert result.error_code == "timeout"
    assert result.http_status is None
    assert BOT_TOKEN not in (result.error_title or "")


async def test_a_slow_platform_still_delivers_within_the_timeout(
    server: FakePlatformServer, client: HttpClient
) -> None:
    server.inject(Fault.slow(0.05, platform="twilio"))
    result = await send(server, client, "twilio", cmd("+1", HELLO))
    assert result.outcome == "sent"


async def test_connection_refused_is_retryable(
    server: FakePlatformServer, client: HttpClient
) -> None:
    async with FakePlatformServer() as gone:
        dead_url = gone.base_url
    result = await send(server, client, "telegram", cmd("1", HELLO), base_url=dead_url)
    assert result.outcome == "retryable"
    assert result.error_code in {"connect_error", "timeout"}
    assert BOT_TOKEN not in (result.error_title or "")


async def test_secrets_echoed_by_the_platform_are_scrubbed(
    server: FakePlatformServer, client: HttpClient
) -> None:
    server.inject(Fault(status=401, code=401, message=f"Unauthorized: bot{BOT_TOKEN} rejected"))
    result = await send(server, client, "telegram", cmd("1", HELLO))
    assert result.outcome == "permanent"
    assert "***" in (result.error_title or "")
    assert "***" in (result.response_excerpt or "")


async def test_secrets_echoed_encoded_are_scrubbed_too(
    server: FakePlatformServer, client: HttpClient
) -> None:
    """A proxy or framework may echo the request path percent-encoded, or its headers: the
    token's ``:`` becomes ``%3A``, Twilio's password travels base64-encoded with the SID."""
    quoted = urllib.parse.quote(f"/bot{BOT_TOKEN}/sendMessage", safe="/")
    server.inject(Fault(status=404, code=404, message=f"Cannot POST {quoted}"))
    telegram = await send(server, client, "telegram", cmd("1", HELLO))
    basic = base64.b64encode(f"{TWILIO_SID}:{TWILIO_TOKEN}".encode()).decode()
    server.inject(Fault(status=400, code=21211, message=f"echo Authorization: Basic {basic}"))
    twilio = await send(server, client, "twilio", cmd("+15551230000", HELLO))
    leaked = (BOT_TOKEN, urllib.parse.quote(BOT_TOKEN, safe=""), TWILIO_TOKEN, basic)
    for result in (telegram, twilio):
        assert result.outcome == "permanent"
        texts = (result.error_title or "", result.response_excerpt or "")
        assert all(secret not in text for secret in leaked for text in texts), texts
        assert "***" in texts[1]


@pytest.mark.parametrize(
    ("platform", "fault", "retry_after"),
    [
        (
            "telegram",
            Fault(
                status=429,
                body={
                    "ok": False,
                    "error_code": 429,
                    "description": "Too Many Requests",
                    "parameters": {"retry_after": 1e308},
                },
            ),
            MAX_RETRY_AFTER,
        ),
        ("telegram", Fault(status=429, headers={"Retry-After": "inf"}), None),
        ("whatsapp", Fault(status=429, headers={"Retry-After": "1e12"}), None),
        ("whatsapp", Fault(status=429, headers={"Retry-After": "99999999999"}), MAX_RETRY_AFTER),
        ("twilio", Fault(status=429, code=20429, headers={"Retry-After": "NaN"}), None),
    ],
)
async def test_absurd_retry_hints_are_bounded(
    server: FakePlatformServer,
    client: HttpClient,
    platform: str,
    fault: Fault,
    retry_after: float | None,
) -> None:
    server.inject(fault)
    result = await send(server, client, platform, cmd("1", HELLO))
    assert (result.outcome, result.throttled) == ("retryable", True)
    assert result.retry_after == retry_after


async def test_missing_credentials_fail_without_a_request(
    server: FakePlatformServer, client: HttpClient
) -> None:
    broken = ChannelConfig("ch", "whatsapp", "1", {}, server.base_url)
    result = await SENDERS["whatsapp"].send(client, broken, cmd("+1", HELLO), timeout=1)
    assert (result.outcome, result.error_code) == ("permanent", "missing_credential")
    assert server.requests == []
    assert "tok" not in repr(ChannelConfig("c", "x", "a", {"access_token": "tok-secret"}))


async def test_default_httpx_transport_sends_the_same_bytes(server: FakePlatformServer) -> None:
    async with HttpClient() as plain:
        result = await send(server, plain, "whatsapp", cmd("+1", HELLO))
    assert result.outcome == "sent"
    assert only(server).json["text"] == {"body": "hello", "preview_url": False}
    assert json.loads(json.dumps(only(server).json)) == only(server).json


@pytest.mark.parametrize(
    ("platform", "to", "fault", "code"),
    [
        ("whatsapp", "+393331234567", Fault.credentials_refused("whatsapp"), "190"),
        ("messenger", "1234", Fault.credentials_refused("messenger"), "190"),
        ("instagram", "1234", Fault.credentials_refused(cast(Any, "instagram")), "190"),
        ("telegram", "42", Fault.credentials_refused("telegram"), "401"),
        ("twilio", "+15551230000", Fault.credentials_refused("twilio"), "20003"),
        ("twilio", "+15551230000", Fault(status=401, body={"message": "no"}), "http_401"),
        (
            "whatsapp",
            "+393331234567",
            Fault.platform_error(190, "Error validating access token (subcode 463)", status=400),
            "190",
        ),
    ],
)
async def test_refused_credentials_are_flagged_for_suspension(
    server: FakePlatformServer, client: HttpClient, platform: str, to: str, fault: Fault, code: str
) -> None:
    server.inject(fault)
    result = await send(server, client, platform, cmd(to, HELLO))
    assert result.credentials_invalid is True
    assert result.error_code == code
    assert result.outcome == "permanent"


async def test_other_refusals_do_not_suspend(
    server: FakePlatformServer, client: HttpClient
) -> None:
    server.inject(Fault.platform_error(131026, "Message undeliverable"))
    undeliverable = await send(server, client, "whatsapp", cmd("+393331234567", HELLO))
    server.inject(Fault.server_error(503))
    outage = await send(server, client, "telegram", cmd("42", HELLO))
    server.inject(Fault.platform_error(403, "Forbidden: bot was blocked by the user", status=403))
    blocked = await send(server, client, "telegram", cmd("42", HELLO))
    assert [r.credentials_invalid for r in (undeliverable, outage, blocked)] == [False] * 3
