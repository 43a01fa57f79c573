"""What each platform refuses up front (never sent half-right), without any I/O."""

from __future__ import annotations

from typing import Any

import pytest

from outbox.contracts import SendCommand
from outbox.platforms import SENDERS, UnsupportedContent
from outbox.platforms.telegram import REACTION_EMOJI

HX = "HX" + "0" * 32


def cmd(content: dict[str, Any], **extra: Any) -> SendCommand:
    return SendCommand.model_validate(
        {"id": "c1", "channel_id": "ch", "to": "12345", "content": content, **extra}
    )


def buttons(n: int, title: str = "B") -> dict[str, Any]:
    return {
        "kind": "interactive",
        "interactive": {
            "body": "pick",
            "buttons": [{"id": f"b{i}", "title": f"{title}{i}"} for i in range(n)],
        },
    }


def media(kind: str, **fields: Any) -> dict[str, Any]:
    return {"kind": "media", "media": {"kind": kind, "url": "https://x.test/f", **fields}}


TEMPLATE = {"kind": "template", "template": {"name": "welcome", "language": "en"}}
REACTION = {"kind": "reaction", "reaction": {"message_id": "m1", "emoji": "👍"}}

REFUSED: list[tuple[str, SendCommand, str]] = [
    ("twilio", cmd(buttons(2)), "cannot carry buttons"),
    ("twilio", cmd(media("sticker")), "cannot send stickers"),
    ("twilio", cmd({"kind": "media", "media": {"kind": "image", "id": "M1"}}), "by url"),
    ("twilio", cmd(REACTION), "reactions"),
    ("twilio", cmd(TEMPLATE), "ContentSid"),
    ("twilio", cmd({"kind": "text", "text": "x" * 1601}), "1600"),
    ("twilio", cmd({"kind": "text", "text": "hi"}, reply_to="SM1"), "reply_to"),
    (
        "twilio",
        cmd(
            {
                "kind": "template",
                "template": {
                    "name": HX,
                    "language": "en",
                    "components": [{"type": "header", "parameters": [{"type": "image"}]}],
                },
            }
        ),
        "only take text parameters",
    ),
    ("whatsapp", cmd(buttons(11)), "got 11 choices"),
    ("whatsapp", cmd(buttons(3, title="x" * 20)), "limited to 20"),
    ("whatsapp", cmd(buttons(5, title="x" * 24)), "limited to 24"),
    ("whatsapp", cmd(media("sticker", caption="c")), "cannot carry a caption"),
    ("whatsapp", cmd(media("audio", caption="c")), "cannot carry a caption"),
    ("whatsapp", cmd(buttons(5), metadata={"whatsapp_list_button": "x" * 21}), "1-20"),
    ("messenger", cmd(buttons(14)), "at most 13 quick replies"),
    ("messenger", cmd(TEMPLATE), "no pre-approved templates"),
    ("messenger", cmd(media("image", caption="c")), "cannot carry a caption"),
    ("messenger", cmd(media("sticker")), "cannot send sticker"),
    ("messenger", cmd({"kind": "text", "text": "hi"}, reply_to="m_1"), "reply_to"),
    ("messenger", cmd({"kind": "text", "text": "hi"}, metadata={"message_tag": "PROMO"}), "one of"),
    ("messenger", cmd({"kind": "text", "text": "x" * 2001}), "2000"),
    ("instagram", cmd(media("document")), "Instagram cannot send document"),
    ("instagram", cmd(REACTION), "only supports the 'love'"),
    ("telegram", cmd(TEMPLATE), "no message templates"),
    ("telegram", cmd(media("sticker", caption="c")), "stickers cannot carry a caption"),
    ("telegram", cmd({"kind": "text", "text": "hi"}, reply_to="abc"), "integer message id"),
    (
        "telegram",
        cmd({"kind": "reaction", "reaction": {"message_id": "x", "emoji": "👍"}}),
        "integer",
    ),
    (
        "telegram",
        cmd(
            {
                "kind": "interactive",
                "interactive": {"body": "b", "buttons": [{"id": "x" * 65, "title": "t"}]},
            }
        ),
        "64 bytes",
    ),
]


@pytest.mark.parametrize(
    ("platform", "command", "message"), REFUSED, ids=[f"{p}-{m}" for p, _, m in REFUSED]
)
def test_platform_refuses_what_it_cannot_express(
    platform: str, command: SendCommand, message: str
) -> None:
    with pytest.raises(UnsupportedContent, match=message):
        SENDERS[platform].validate(command)


ACCEPTED: list[tuple[str, SendCommand]] = [
    ("whatsapp", cmd(buttons(3))),
    ("whatsapp", cmd(buttons(10))),
    ("whatsapp", cmd(TEMPLATE)),
    ("whatsapp", cmd(REACTION)),
    ("messenger", cmd(buttons(13))),
    ("messenger", cmd(REACTION)),
    ("instagram", cmd({"kind": "reaction", "reaction": {"message_id": "m", "emoji": "❤️"}})),
    ("telegram", cmd(buttons(20))),
    ("twilio", cmd({"kind": "template", "template": {"name": HX, "language": "en"}})),
]


@pytest.mark.parametrize(("platform", "command"), ACCEPTED)
def test_platform_accepts(platform: str, command: SendCommand) -> None:
    SENDERS[platform].validate(command)


def test_registry_covers_every_platform() -> None:
    assert set(SENDERS) == {"whatsapp", "messenger", "instagram", "telegram", "twilio"}
    assert all(SENDERS[p].platform == p for p in SENDERS)


WA_SENDER = "whatsapp:+14155238886"
SMS_SENDER = "+14155238886"
SERVICE = "MG" + "1" * 32
TEXT = {"kind": "text", "text": "hi"}


@pytest.mark.parametrize(
    ("sender", "to", "message"),
    [
        (WA_SENDER, "+393331234567", "write the recipient as 'whatsapp:\\+393331234567'"),
        (SMS_SENDER, "whatsapp:+393331234567", "to a WhatsApp address"),
    ],
)
def test_twilio_refuses_a_whatsapp_sms_mix(sender: str, to: str, message: str) -> None:
    command = SendCommand.model_validate({"id": "c", "channel_id": "ch", "to": to, "content": TEXT})
    with pytest.raises(UnsupportedContent, match=message):
        SENDERS["twilio"].validate(command, account_id=sender)


@pytest.mark.parametrize(
    ("sender", "to"),
    [
        (WA_SENDER, "whatsapp:+393331234567"),
        (SMS_SENDER, "+393331234567"),
        (SERVICE, "whatsapp:+393331234567"),  # a Messaging Service may hold both kinds
        (SERVICE, "+393331234567"),
        (None, "+393331234567"),  # sender unknown: nothing to compare
        (None, "whatsapp:+393331234567"),
    ],
)
def test_twilio_accepts_a_matching_pair(sender: str | None, to: str) -> None:
    command = SendCommand.model_validate({"id": "c", "channel_id": "ch", "to": to, "content": TEXT})
    SENDERS["twilio"].validate(command, account_id=sender)


def test_every_sender_takes_the_account_id() -> None:
    for sender in SENDERS.values():
        sender.validate(cmd(TEXT), account_id="12345")


def interactive(body: str) -> dict[str, Any]:
    return {
        "kind": "interactive",
        "interactive": {"body": body, "buttons": [{"id": "a", "title": "A"}]},
    }


@pytest.mark.parametrize("make", [lambda t: {"kind": "text", "text": t}, interactive])
def test_instagram_text_is_limited_to_1000_utf8_bytes(make: Any) -> None:
    instagram, messenger = SENDERS["instagram"], SENDERS["messenger"]
    instagram.validate(cmd(make("x" * 1000)))
    instagram.validate(cmd(make("é" * 500)))  # 2 bytes each: exactly 1000
    instagram.validate(cmd(make("😀" * 250)))  # 4 bytes each: exactly 1000
    for text in ("x" * 1001, "é" * 501, "😀" * 251, "😀" * 300, "x" * 2000):
        with pytest.raises(UnsupportedContent, match="1000 bytes of UTF-8"):
            instagram.validate(cmd(make(text)))
    # Messenger keeps its 2000-character limit, whatever the bytes
    messenger.validate(cmd(make("😀" * 2000)))
    messenger.validate(cmd(make("x" * 2000)))
    with pytest.raises(UnsupportedContent, match="Messenger text is limited to 2000 characters"):
        messenger.validate(cmd(make("x" * 2001)))


def telegram_reaction(emoji: str) -> SendCommand:
    return cmd({"kind": "reaction", "reaction": {"message_id": "7", "emoji": emoji}})


@pytest.mark.parametrize(
    "emoji",
    [
        "👍",
        "❤",
        "\u2764\ufe0f",  # ❤️ as keyboards type it: U+FE0F is dropped
        "\u2764\ufe0f\u200d\U0001f525",  # heart on fire, fully qualified
        "\u2764\u200d\U0001f525",
        "\U0001f468\u200d\U0001f4bb",  # man technologist
        "\U0001f937\u200d\u2642\ufe0f",  # man shrugging
        "\U0001f937\u200d\u2640",  # woman shrugging
        "🤷",
        "🕊\ufe0f",
        "☃\ufe0f",
        "🫡",
        "😡",
        "",  # removes the reaction
    ],
)
def test_telegram_accepts_the_listed_reaction_emoji(emoji: str) -> None:
    SENDERS["telegram"].validate(telegram_reaction(emoji))


@pytest.mark.parametrize(
    "emoji",
    [
        "😊",
        "😂",
        "👍🏽",  # skin tone modifiers are not listed
        "\u2764\ufe0f\u200d\U0001fa79",  # mending heart
        "\U0001f937\u200d\u2642\u200d",  # a stray ZWJ
        "👍👍",
        "like",
        "\ufe0f",  # nothing but the selector is not a removal
        " ",
    ],
)
def test_telegram_refuses_other_reaction_emoji(emoji: str) -> None:
    with pytest.raises(UnsupportedContent, match="ReactionTypeEmoji"):
        SENDERS["telegram"].validate(telegram_reaction(emoji))


def test_telegram_reaction_list_is_the_bot_api_list() -> None:
    assert len(REACTION_EMOJI) == 73
    assert not any("\ufe0f" in emoji for emoji in REACTION_EMOJI)
    zwj = sorted(e for e in REACTION_EMOJI if len(e) > 1)
    assert zwj == sorted(
        [
            "\u2764\u200d\U0001f525",
            "\U0001f468\u200d\U0001f4bb",
            "\U0001f937\u200d\u2642",
            "\U0001f937\u200d\u2640",
        ]
    )
