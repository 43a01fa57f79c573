"""Each platform's delivery rules as its outbox adapter states them (pure): send rates, the
per-conversation pace, which platforms resolve media and which can upload."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from normalizer import normalize
from normalizer.models import MessageEvent
from outbox.delivery import limits_for, recipient_rate
from outbox.media import RESOLVERS, MediaNotFound
from outbox.media_upload import UPLOADERS
from outbox.platforms import AUDIO_VIDEO_RATES, CHANNEL_RATES, SENDERS
from outbox.platforms.telegram import TELEGRAM_GROUP_CHAT, TELEGRAM_PRIVATE_CHAT
from outbox.platforms.twilio import TWILIO_PAIR
from outbox.ratelimit import Rate
from outbox.receipts import callback_answers


def test_channel_rates_are_the_documented_figures() -> None:
    assert dict(CHANNEL_RATES) == {
        "whatsapp": Rate(80),
        "messenger": Rate(300),
        "instagram": Rate(300),
        "telegram": Rate(30),
        "twilio": Rate(1),
    }
    assert dict(AUDIO_VIDEO_RATES) == {"messenger": Rate(10), "instagram": Rate(10)}


@pytest.mark.parametrize(
    ("platform", "recipient", "configured", "expected"),
    [
        ("telegram", "12345", None, TELEGRAM_PRIVATE_CHAT),
        ("telegram", "-100123", None, TELEGRAM_GROUP_CHAT),
        ("telegram", "@channel", None, TELEGRAM_GROUP_CHAT),
        ("telegram", "12345", Rate(1, 6.0), TELEGRAM_PRIVATE_CHAT),
        ("twilio", "+15557654321", None, TWILIO_PAIR),
        ("twilio", "whatsapp:+15557654321", Rate(1, 6.0), TWILIO_PAIR),
        ("whatsapp", "+1555", None, None),
        ("whatsapp", "+1555", Rate(1, 6.0), Rate(1, 6.0)),
        ("messenger", "psid", Rate(1, 6.0), None),
        ("instagram", "igsid", None, None),
        ("not-a-platform", "x", Rate(1, 6.0), None),
    ],
)
def test_recipient_rate(
    platform: str, recipient: str, configured: Rate | None, expected: Rate | None
) -> None:
    assert recipient_rate(platform, recipient, whatsapp_pair=configured) == expected
    sender = SENDERS.get(platform)
    if sender is not None:
        assert sender.recipient_rate(recipient, configured_pair=configured) == expected


def test_facts_are_exact() -> None:
    assert (Rate(1, 1.0), Rate(20, 60.0)) == (TELEGRAM_PRIVATE_CHAT, TELEGRAM_GROUP_CHAT)
    assert (TWILIO_PAIR.count, TWILIO_PAIR.per) == (1, 1.0)


def test_limits_for_adds_the_audio_video_budget_and_the_pair_pace() -> None:
    limits = limits_for("instagram", "ch", "igsid", media_kind="audio")
    assert [limit.rate for limit in limits] == [Rate(300), Rate(10)]
    assert limits_for("whatsapp", "ch", "+1", media_kind="audio")[0].rate == Rate(80)
    assert len(limits_for("whatsapp", "ch", "+1", media_kind="audio")) == 1
    assert [lim.rate for lim in limits_for("twilio", "ch", "+1")] == [Rate(1), TWILIO_PAIR]


def test_which_platforms_can_upload() -> None:
    assert {p for p, up in UPLOADERS.items() if up is not None} == {
        "whatsapp",
        "messenger",
        "instagram",
    }
    assert {p for p, up in UPLOADERS.items() if up is None} == {"telegram", "twilio"}


@pytest.mark.parametrize(
    ("platform", "media_id"),
    [
        ("whatsapp", "not-digits"),
        ("telegram", "bad id with spaces"),
        ("twilio", "SM123:ME456"),
        ("messenger", "https://example.com/x"),
        ("instagram", "u.!!!"),
    ],
)
def test_resolvers_refuse_malformed_ids_before_any_request(platform: str, media_id: str) -> None:
    client: Any = None  # a request would fail on None: the id is refused first
    with pytest.raises(MediaNotFound):
        asyncio.run(RESOLVERS[platform](client, None, (), {}, media_id))


def _telegram_events(body: bytes) -> list[MessageEvent]:
    events = normalize("telegram", body, channel_id=CHANNEL, account_id="12345")
    return [e for e in events if isinstance(e, MessageEvent)]


CHANNEL = "0b5c8a1e-4a52-4c52-9d2a-2f3c4b5a6d7e"
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "payloads" / "telegram"


def test_telegram_answers_a_button_press_and_nothing_else() -> None:
    [press] = _telegram_events((FIXTURES / "callback_query.json").read_bytes())
    command = SENDERS["telegram"].automatic_answer(press)
    assert command is not None
    assert command.id == f"auto:answer:{press.id}"
    assert command.channel_id == CHANNEL
    assert command.to == press.data.conversation_id.rpartition(":")[2]
    assert command.content.kind == "callback_answer"
    assert command.content.callback_answer is not None
    assert command.content.callback_answer.callback_query_id == press.data.message.id
    assert callback_answers([press]) == [command]
    for platform in ("whatsapp", "messenger", "instagram", "twilio"):
        assert SENDERS[platform].automatic_answer(press) is None


def test_telegram_does_not_answer_a_plain_message() -> None:
    text = sorted(p for p in FIXTURES.glob("*.json") if "text" in p.name)[0]
    events = _telegram_events(text.read_bytes())
    assert events
    assert [SENDERS["telegram"].automatic_answer(e) for e in events] == [None] * len(events)
    assert callback_answers(events) == []
