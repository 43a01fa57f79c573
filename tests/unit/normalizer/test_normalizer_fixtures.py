"""Table-driven: every recorded payload → the exact canonical fields expected of it.

Each case lists, per emitted event (in order), dotted paths into the event's JSON and their
expected values. The event count must match too: nothing dropped, nothing invented.
"""

from __future__ import annotations

from typing import Any

import pytest

from normalizer import dump_event

from .helpers import RECEIVED, load, path, run

WA = "whatsapp:106540352242922:16505551234"
WA_MID = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTRBNjU5OUFFRTAzODEwMTQ0RgA="
WA_SENT = "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQUFERjg0NDEzNDdFODU3MUMxMAA="
WA_TIME = "2025-06-08T20:59:43Z"
MS = "messenger:112233445566778:6101234567890123"
MS_MID = "m_AG5Hz2Uq7tuwNEhXfYYKj8mJEM_QPpz5jdCK48PnKAjSdjfipqxqMvK8ma6AC8fplwlqLP_5cgXIbu7I3rBN0P"
MS_TIME = "2016-03-23T00:25:52.478Z"
IG = "instagram:17841400000000000:1234567890123456"
IG_MID = "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDAwMDAwMDAw"
IG_TIME = "2025-10-24T06:28:14.014Z"
TG = "telegram:7000000001:1760450482"
TG_TIME = "2021-05-21T06:16:11Z"
SMS = "twilio:+15017122661:+15558675310"
TWA = "twilio:whatsapp:+14155238886:whatsapp:+14155550123"


def received(**extra: Any) -> dict[str, Any]:
    return {"type": "message.received", **extra}


def wa_msg(kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "message.received",
        "subject": WA,
        "time": WA_TIME,
        "data.account_id": "106540352242922",
        "data.contact.id": "16505551234",
        "data.contact.name": "Sheena Nelson",
        "data.contact.phone": "+16505551234",
        "data.message.id": WA_MID,
        "data.message.kind": kind,
        "data.message.echo": False,
        **extra,
    }


def wa_status(state: str, time: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": "message.status",
        "subject": WA,
        "time": time,
        "data.status.message_id": WA_SENT,
        "data.status.state": state,
        "data.status.recipient_id": "16505551234",
        "data.status.error": None,
        "data.message": None,
        **extra,
    }


def ms_msg(
    kind: str, conv: str = MS, time: str = MS_TIME, mid: str = MS_MID, **extra: Any
) -> dict[str, Any]:
    return {
        "type": "message.received",
        "subject": conv,
        "time": time,
        "data.message.id": mid,
        "data.message.kind": kind,
        **extra,
    }


def tg_msg(kind: str, conv: str = TG, time: str = TG_TIME, **extra: Any) -> dict[str, Any]:
    return {
        "type": "message.received",
        "subject": conv,
        "time": time,
        "data.account_id": "7000000001",
        "data.message.kind": kind,
        **extra,
    }


def tw_status(state: str, conv: str = SMS, **extra: Any) -> dict[str, Any]:
    return {
        "type": "message.status",
        "subject": conv,
        "time": RECEIVED,
        "data.status.message_id": "SM5cc400000000000000000000000000c1",
        "data.status.state": state,
        **extra,
    }


def media(mid: str | None, mime: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"data.message.media.id": mid, "data.message.media.mime_type": mime, **extra}


CASES: list[tuple[str, str, list[dict[str, Any]]]] = [
    # ---------------------------------------------------------------- WhatsApp
    (
        "whatsapp",
        "text.json",
        [
            wa_msg(
                "text",
                **{
                    "data.message.text": "Does it come in another color?",
                    "data.message.reply_to": None,
                    "data.message.forwarded": False,
                },
            )
        ],
    ),
    (
        "whatsapp",
        "image.json",
        [
            wa_msg(
                "image",
                **{
                    "data.message.text": "New arrivals",
                    **media("65463453", "image/jpeg"),
                    "data.message.media.sha256": "4654+8g=",
                    "data.message.media.url": "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=65463453&source=webhook&ext=1749416383&hash=ARk",
                },
            )
        ],
    ),
    (
        "whatsapp",
        "video_forwarded.json",
        [
            wa_msg(
                "video",
                **{
                    "data.message.text": "caption",
                    **media("765756756", "video/mp4"),
                    "data.message.forwarded": True,
                },
            )
        ],
    ),
    (
        "whatsapp",
        "audio.json",
        [
            wa_msg(
                "audio", **{"data.message.text": None, **media("1234567890987654321", "audio/mpeg")}
            )
        ],
    ),
    (
        "whatsapp",
        "voice.json",
        [wa_msg("voice", **media("1234567890987654321", "audio/ogg; codecs=opus"))],
    ),
    (
        "whatsapp",
        "document.json",
        [
            wa_msg(
                "document",
                **{
                    "data.message.text": "caption",
                    **media("1234567890987654321", "application/pdf"),
                    "data.message.media.filename": "filename.pdf",
                },
            )
        ],
    ),
    ("whatsapp", "sticker.json", [wa_msg("sticker", **media("9876543210", "image/webp"))]),
    (
        "whatsapp",
        "location_current.json",
        [
            wa_msg(
                "location",
                **{
                    "data.message.location": {
                        "latitude": 12.25089,
                        "longitude": 43.90539,
                        "name": None,
                        "address": None,
                    }
                },
            )
        ],
    ),
    (
        "whatsapp",
        "location_chosen.json",
        [
            wa_msg(
                "location",
                **{
                    "data.message.location": {
                        "latitude": 37.4611978,
                        "longitude": -122.2164385,
                        "name": "Facebook HQ",
                        "address": "1 Hacker Way, Menlo Park, CA 94025",
                    }
                },
            )
        ],
    ),
    (
        "whatsapp",
        "contacts.json",
        [
            wa_msg(
                "contacts",
                **{
                    "data.message.text": None,
                    "data.raw.contacts.0.name.formatted_name": "Chandler Bing",
                },
            )
        ],
    ),
    (
        "whatsapp",
        "interactive_button_reply.json",
        [
            wa_msg(
                "reply",
                **{
                    "time": "2025-06-15T22:05:36Z",
                    "data.message.id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgASGBQzQTZBQzg0MzQ4QjRCM0NGNkVGOAA=",  # noqa: E501
                    "data.message.reply": {"id": "cancel-button", "title": "Cancel"},
                    "data.message.reply_to": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI3MEM2RUJFNkI0RENGQTVDRjUA",  # noqa: E501
                },
            )
        ],
    ),
    (
        "whatsapp",
        "interactive_list_reply.json",
        [
            wa_msg(
                "reply",
                **{
                    "time": "2025-06-13T22:42:55Z",
                    "data.message.id": WA_SENT,
                    "data.message.reply": {
                        "id": "priority_express",
                        "title": "Priority Mail Express",
                    },
                },
            )
        ],
    ),
    (
        "whatsapp",
        "button.json",
        [
            wa_msg(
                "reply",
                **{
                    "data.message.reply": {"id": "callback_data", "title": "Yes, confirm"},
                    "data.message.reply_to": "wamid.template==",
                },
            )
        ],
    ),
    (
        "whatsapp",
        "reaction.json",
        [
            wa_msg(
                "reaction",
                **{"data.message.reaction": {"message_id": "wamid.yzxyzx=", "emoji": "\U0001f62e"}},
            )
        ],
    ),
    (
        "whatsapp",
        "reaction_removed.json",
        [
            wa_msg(
                "reaction",
                **{"data.message.reaction": {"message_id": "wamid.yzxyzx=", "emoji": ""}},
            )
        ],
    ),
    (
        "whatsapp",
        "reaction_removed_no_emoji.json",
        [
            wa_msg(
                "reaction",
                **{"data.message.reaction": {"message_id": "wamid.yzxyzx=", "emoji": ""}},
            )
        ],
    ),
    (
        "whatsapp",
        "order.json",
        [
            wa_msg(
                "order",
                **{
                    "data.message.text": "Two please",
                    "data.raw.order.product_items.0.product_retailer_id": "HAMBURGER",
                },
            )
        ],
    ),
    (
        "whatsapp",
        "system_changed_number.json",
        [
            wa_msg(
                "unsupported",
                **{
                    "time": "2025-02-12T00:43:44Z",
                    "data.contact.name": None,
                    "data.message.text": "User Sheena Nelson changed from 16505551234 to 12195555358",  # noqa: E501
                },
            )
        ],
    ),
    ("whatsapp", "unsupported.json", [wa_msg("unsupported", **{"data.raw.errors.0.code": 131051})]),
    (
        "whatsapp",
        "edit.json",
        [
            wa_msg(
                "image",
                **{
                    "type": "message.edited",
                    "data.message.id": "wamid.ORIGINAL=",
                    "data.message.text": "Updated image caption",
                    "data.message.reply_to": "wamid.QUOTED=",
                    **media("111", "image/jpeg"),
                },
            )
        ],
    ),
    (
        "whatsapp",
        "revoke.json",
        [
            {
                "type": "message.deleted",
                "subject": WA,
                "data.message.id": "wamid.ORIGINAL=",
                "data.message.kind": None,
                "data.message.text": None,
            }
        ],
    ),
    (
        "whatsapp",
        "reply_context.json",
        [wa_msg("text", **{"data.message.reply_to": "wamid.OUR_MESSAGE="})],
    ),
    ("whatsapp", "frequently_forwarded.json", [wa_msg("text", **{"data.message.forwarded": True})]),
    (
        "whatsapp",
        "referral.json",
        [
            wa_msg(
                "text",
                **{"data.message.text": "Hi, I saw your ad", "data.raw.referral.source_type": "ad"},
            )
        ],
    ),
    (
        "whatsapp",
        "bsuid_no_phone.json",
        [
            {
                "type": "message.received",
                "subject": "whatsapp:106540352242922:US.13491208655302741918",
                "data.contact": {
                    "id": "US.13491208655302741918",
                    "name": "Jo",
                    "phone": None,
                    "username": "jo.smith",
                },
                "data.message.text": "hello",
            }
        ],
    ),
    (
        "whatsapp",
        "bsuid_with_phone.json",
        [wa_msg("text", **{"data.contact.username": "sheena", "data.message.text": "hello again"})],
    ),
    (
        "whatsapp",
        "status_sent.json",
        [
            wa_status(
                "sent",
                "2025-06-15T23:27:53Z",
                **{"data.contact.id": "16505551234", "data.raw.pricing.pricing_model": "PMP"},
            )
        ],
    ),
    (
        "whatsapp",
        "group_text.json",
        [
            wa_msg(
                "text",
                subject="whatsapp:106540352242922:Y2FwaV9ncm91cDoxNTU1MDc4Mzg4MToxMjAzNjMzOTEzNDQ5NzY4NjA=",
                **{"data.message.text": "Hello group"},
            )
        ],
    ),
    (
        "whatsapp",
        "voice_legacy.json",
        [wa_msg("voice", **media("1234567890987654321", "audio/ogg; codecs=opus"))],
    ),
    ("whatsapp", "status_delivered.json", [wa_status("delivered", "2025-06-15T23:28:00Z")]),
    ("whatsapp", "status_read.json", [wa_status("read", "2025-06-15T23:28:10Z")]),
    (
        "whatsapp",
        "status_played.json",
        [wa_status("read", "2025-06-15T23:28:15Z", **{"data.raw.status": "played"})],
    ),
    (
        "whatsapp",
        "status_failed.json",
        [
            {
                "type": "message.status",
                "subject": WA,
                "data.status.state": "failed",
                "data.status.message_id": "wamid.HBgLMTY1MDM4Nzk0MzkVAgARGBI0QUQ2MjA4NEYyRkExNjMyREUA",  # noqa: E501
                "data.status.error": {
                    "code": "131049",
                    "title": "This message was not delivered to maintain healthy ecosystem engagement.",  # noqa: E501
                    "detail": "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",  # noqa: E501
                },
            }
        ],
    ),
    (
        "whatsapp",
        "value_errors.json",
        [
            {
                "type": "unsupported",
                "subject": "whatsapp:106540352242922:-",
                "time": RECEIVED,
                "data.raw.code": 130429,
            }
        ],
    ),
    (
        "whatsapp",
        "interactive_with_error.json",
        [wa_msg("unsupported"), {"type": "unsupported", "data.raw.code": 131000}],
    ),
    (
        "whatsapp",
        "template_status_update.json",
        [
            {
                "type": "unsupported",
                "time": "2025-06-15T23:26:40Z",  # entry.time (seconds), not the receipt time
                "data.raw.field": "message_template_status_update",
                "data.raw.value.event": "APPROVED",
            }
        ],
    ),
    (
        "whatsapp",
        "smb_message_echo.json",
        [
            {
                "type": "message.received",
                "subject": WA,
                "data.message.echo": True,
                "data.message.text": "Sent from the app",
                "data.contact.id": "16505551234",
            }
        ],
    ),
    (
        "whatsapp",
        "batch.json",
        [
            {"data.message.id": "wamid.B1=", "subject": WA},
            {
                "data.message.id": "wamid.B2=",
                "subject": "whatsapp:106540352242922:447700900123",
                "data.contact.name": "Bob",
            },
            {
                "type": "message.status",
                "data.status.message_id": "wamid.B3=",
                "data.status.state": "sent",
                "subject": WA,
            },
            {
                "type": "message.status",
                "data.status.message_id": "wamid.B3=",
                "data.status.state": "delivered",
            },
            {
                "data.message.id": "wamid.B4=",
                "subject": "whatsapp:222222222222222:16505551234",
                "data.account_id": "222222222222222",
            },
        ],
    ),
    # ---------------------------------------------------------------- Messenger
    (
        "messenger",
        "text.json",
        [
            ms_msg(
                "text",
                **dict[str, Any](
                    {
                        "data.account_id": "112233445566778",
                        "data.contact.id": "6101234567890123",
                        "data.message.text": "hello, world!",
                        "data.message.echo": False,
                    }
                ),
            )
        ],
    ),
    (
        "messenger",
        "quick_reply.json",
        [
            ms_msg(
                "reply",
                **dict[str, Any]({"data.message.reply": {"id": "COLOR_RED", "title": "Red"}}),
            )
        ],
    ),
    ("messenger", "reply_to.json", [ms_msg("text", **{"data.message.reply_to": "m_OUR_EARLIER"})]),
    (
        "messenger",
        "attachment_image.json",
        [
            ms_msg(
                "image", **{"data.message.media.url": "https://scontent.xx.fbcdn.net/v/image.bin"}
            )
        ],
    ),
    (
        "messenger",
        "attachment_video.json",
        [
            ms_msg(
                "video", **{"data.message.media.url": "https://scontent.xx.fbcdn.net/v/video.bin"}
            )
        ],
    ),
    (
        "messenger",
        "attachment_audio.json",
        [
            ms_msg(
                "audio", **{"data.message.media.url": "https://scontent.xx.fbcdn.net/v/audio.bin"}
            )
        ],
    ),
    (
        "messenger",
        "attachment_file.json",
        [
            ms_msg(
                "document", **{"data.message.media.url": "https://scontent.xx.fbcdn.net/v/file.bin"}
            )
        ],
    ),
    (
        "messenger",
        "attachment_sticker.json",
        [
            ms_msg(
                "sticker", **{"data.message.media.url": "https://scontent.xx.fbcdn.net/v/like.png"}
            )
        ],
    ),
    (
        "messenger",
        "attachment_location.json",
        [
            ms_msg(
                "location",
                **dict[str, Any](
                    {
                        "data.message.location": {
                            "latitude": 45.4642,
                            "longitude": 9.19,
                            "name": "Pinned Location",
                            "address": None,
                        }
                    }
                ),
            )
        ],
    ),
    (
        "messenger",
        "attachment_fallback.json",
        [
            ms_msg(
                "unsupported",
                **{
                    "data.message.text": "https://example.com",
                    "data.raw.message.attachments.0.type": "fallback",
                },
            )
        ],
    ),
    (
        "messenger",
        "attachments_multiple.json",
        [
            ms_msg(
                "image",
                **{
                    "data.message.media.url": "https://scontent.xx.fbcdn.net/v/1.jpg",
                    "data.raw.message.attachments.1.payload.url": "https://scontent.xx.fbcdn.net/v/2.jpg",
                },
            )
        ],
    ),
    (
        "messenger",
        "echo.json",
        [
            ms_msg(
                "text",
                time="2016-03-12T06:29:57.627Z",
                mid="mid.1457764197618:41d102a3e1ae206a38",
                **dict[str, Any](
                    {
                        "data.message.echo": True,
                        "data.contact.id": "6101234567890123",
                        "data.account_id": "112233445566778",
                    }
                ),
            )
        ],
    ),
    (
        "messenger",
        "postback.json",
        [
            ms_msg(
                "reply",
                mid="m_POSTBACK",
                **dict[str, Any](
                    {"data.message.reply": {"id": "GET_STARTED", "title": "Get Started"}}
                ),
            )
        ],
    ),
    (
        "messenger",
        "reaction.json",
        [
            {
                "type": "message.received",
                "subject": MS,
                "data.message.id": None,
                "data.message.kind": "reaction",
                "data.message.reaction": {"message_id": "m_OUR_MESSAGE", "emoji": "\u2764\ufe0f"},
            }
        ],
    ),
    (
        "messenger",
        "unreaction.json",
        [
            {
                "type": "message.received",
                "time": "2016-03-23T00:26:00.000Z",
                "data.message.kind": "reaction",
                "data.message.reaction": {"message_id": "m_OUR_MESSAGE", "emoji": ""},
            }
        ],
    ),
    (
        "messenger",
        "read.json",
        [
            {
                "type": "message.status",
                "subject": MS,
                "data.status": {
                    "message_id": None,
                    "state": "read",
                    "recipient_id": "6101234567890123",
                    "error": None,
                    "watermark": "2016-03-22T17:47:36.253Z",
                    "pricing": None,
                },
            }
        ],
    ),
    (
        "messenger",
        "delivery.json",
        [
            {
                "type": "message.status",
                "subject": MS,
                "data.status.message_id": "mid.1458668856218:ed81099e15d3f4f233",
                "data.status.state": "delivered",
                "data.status.watermark": "2016-03-22T17:47:36.253Z",
            },
            {
                "type": "message.status",
                "subject": MS,
                "data.status.message_id": "mid.1458668856218:ed81099e15d3f4f234",
                "data.status.state": "delivered",
            },
        ],
    ),
    (
        "messenger",
        "delivery_watermark_only.json",
        [
            {
                "type": "message.status",
                "data.status.message_id": None,
                "data.status.state": "delivered",
                "data.status.watermark": "2016-03-22T17:47:36.253Z",
            }
        ],
    ),
    (
        "messenger",
        "referral.json",
        [
            {
                "type": "conversation.updated",
                "subject": MS,
                "data.conversation": {
                    "blocked": None,
                    "referral": {"ref": "summer-sale", "source": "ADS", "type": "OPEN_THREAD"},
                },
                "data.message": None,
            }
        ],
    ),
    (
        "messenger",
        "message_edit.json",
        [
            {
                "type": "message.edited",
                "subject": MS,
                "data.message.id": MS_MID,
                "data.message.kind": "text",
                "data.message.text": "hello, world! (edited)",
            }
        ],
    ),
    (
        "messenger",
        "optin.json",
        [
            {
                "type": "unsupported",
                "subject": MS,
                "time": MS_TIME,
                "data.raw.optin.payload": "ALERTS",
            }
        ],
    ),
    (
        "messenger",
        "batch.json",
        [
            {"data.message.id": "m_1", "data.message.text": "one"},
            {"data.message.id": "m_2", "time": "2016-03-23T00:25:52.479Z"},
            {
                "type": "message.status",
                "data.status.state": "read",
                "data.status.watermark": "2016-03-23T00:25:52.000Z",
            },
        ],
    ),
    # ---------------------------------------------------------------- Instagram
    (
        "instagram",
        "text.json",
        [
            ms_msg(
                "text",
                IG,
                IG_TIME,
                IG_MID,
                **{
                    "data.platform": "instagram",
                    "data.account_id": "17841400000000000",
                    "data.message.text": "Is this still available?",
                },
            )
        ],
    ),
    (
        "instagram",
        "image.json",
        [
            ms_msg(
                "image",
                IG,
                IG_TIME,
                IG_MID,
                **{
                    "data.message.media.url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=1"
                },
            )
        ],
    ),
    (
        "instagram",
        "share_ig_post.json",
        [
            ms_msg(
                "unsupported",
                IG,
                IG_TIME,
                IG_MID,
                **{
                    "data.message.text": "Build a workspace",
                    "data.message.media.url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=2",
                    "data.raw.message.attachments.1.type": "ig_post",
                },
            )
        ],
    ),
    (
        "instagram",
        "story_mention.json",
        [
            ms_msg(
                "unsupported",
                IG,
                IG_TIME,
                IG_MID,
                **{
                    "data.message.media.url": "https://lookaside.fbsbx.com/ig_messaging_cdn/?asset_id=3",
                    "data.raw.message.attachments.0.type": "story_mention",
                },
            )
        ],
    ),
    (
        "instagram",
        "story_reply.json",
        [
            ms_msg(
                "text",
                IG,
                IG_TIME,
                IG_MID,
                **{"data.message.text": "Love this!", "data.message.reply_to": "17900000000000001"},
            )
        ],
    ),
    (
        "instagram",
        "quick_reply.json",
        [
            ms_msg(
                "reply",
                IG,
                IG_TIME,
                IG_MID,
                **{"data.message.reply": {"id": "CONFIRM_YES", "title": "Yes"}},
            )
        ],
    ),
    (
        "instagram",
        "reaction.json",
        [
            {
                "type": "message.received",
                "subject": IG,
                "data.message.kind": "reaction",
                "data.message.reaction": {"message_id": "aWdfOUR_MESSAGE", "emoji": "\u2764\ufe0f"},
            }
        ],
    ),
    (
        "instagram",
        "postback.json",
        [
            ms_msg(
                "reply",
                IG,
                IG_TIME,
                "aWdfPOSTBACK",
                **{"data.message.reply": {"id": "HUMAN", "title": "Talk to a human"}},
            )
        ],
    ),
    (
        "instagram",
        "seen.json",
        [
            {
                "type": "message.status",
                "subject": IG,
                "data.status.message_id": "aWdfOUR_MESSAGE",
                "data.status.state": "read",
                "data.status.watermark": None,
            }
        ],
    ),
    (
        "instagram",
        "unsend.json",
        [
            {
                "type": "message.deleted",
                "subject": IG,
                "data.message.id": IG_MID,
                "data.message.kind": None,
            }
        ],
    ),
    (
        "instagram",
        "echo.json",
        [
            ms_msg(
                "text",
                IG,
                IG_TIME,
                "aWdfECHO",
                **{"data.message.echo": True, "data.contact.id": "1234567890123456"},
            )
        ],
    ),
    (
        "instagram",
        "message_edit.json",
        [
            {
                "type": "message.edited",
                "subject": IG,
                "data.message.id": IG_MID,
                "data.message.text": "Is this still available in red?",
            }
        ],
    ),
    ("instagram", "unsupported_message.json", [ms_msg("unsupported", IG, IG_TIME, IG_MID)]),
    (
        "instagram",
        "changes_messages.json",
        [
            ms_msg(
                "text", IG, "2025-10-24T06:28:14Z", IG_MID, **{"data.message.text": "via changes"}
            )
        ],
    ),
    (
        "instagram",
        "changes_comment.json",
        [
            {
                "type": "unsupported",
                "subject": "instagram:17841400000000000:-",
                "time": "2025-10-24T06:28:18.065Z",  # entry.time (milliseconds)
                "data.raw.field": "comments",
            }
        ],
    ),
    # ---------------------------------------------------------------- Telegram
    (
        "telegram",
        "text_private.json",
        [
            tg_msg(
                "text",
                **dict[str, Any](
                    {
                        "data.message.id": "591",
                        "data.message.text": "Hello!",
                        "data.contact": {
                            "id": "1760450482",
                            "name": "Martin Man",
                            "phone": None,
                            "username": "martinman",
                        },
                    }
                ),
            )
        ],
    ),
    (
        "telegram",
        "text_group.json",
        [
            tg_msg(
                "text",
                "telegram:7000000001:-1001234567890",
                **{"data.contact.id": "1760450482", "data.message.text": "Hi all"},
            )
        ],
    ),
    (
        "telegram",
        "edited_message.json",
        [
            tg_msg(
                "text",
                time="2021-05-21T06:55:24Z",
                **{
                    "type": "message.edited",
                    "data.message.id": "591",
                    "data.message.text": "Hello!",
                },
            )
        ],
    ),
    (
        "telegram",
        "channel_post.json",
        [
            tg_msg(
                "text",
                "telegram:7000000001:-1009876543210",
                "2021-05-21T06:16:40Z",
                **{
                    "data.contact": {
                        "id": "-1009876543210",
                        "name": "News",
                        "phone": None,
                        "username": "newschannel",
                    }
                },
            )
        ],
    ),
    (
        "telegram",
        "edited_channel_post.json",
        [
            tg_msg(
                "text",
                "telegram:7000000001:-1009876543210",
                "2021-05-21T06:18:20Z",
                **{"type": "message.edited", "data.message.text": "Breaking (fixed)"},
            )
        ],
    ),
    (
        "telegram",
        "photo.json",
        [tg_msg("image", **{"data.message.text": "Look at this", **media("AgACAgQAAxk-large")})],
    ),
    (
        "telegram",
        "video.json",
        [
            tg_msg(
                "video",
                **media(
                    "BAACAgQ-video", "video/mp4", **{"data.message.media.filename": "clip.mp4"}
                ),
            )
        ],
    ),
    ("telegram", "video_note.json", [tg_msg("video", **media("DQACAgQ-note"))]),
    ("telegram", "animation.json", [tg_msg("video", **media("CgACAgQ-anim", "video/mp4"))]),
    ("telegram", "audio.json", [tg_msg("audio", **media("CQACAgQ-audio", "audio/mpeg"))]),
    ("telegram", "voice.json", [tg_msg("voice", **media("AwACAgQ-voice", "audio/ogg"))]),
    (
        "telegram",
        "document.json",
        [
            tg_msg(
                "document",
                **{
                    "data.message.text": "Invoice",
                    **media("BQACAgQ-doc", "application/pdf"),
                    "data.message.media.filename": "invoice.pdf",
                },
            )
        ],
    ),
    ("telegram", "sticker.json", [tg_msg("sticker", **media("CAACAgQ-sticker"))]),
    (
        "telegram",
        "location.json",
        [
            tg_msg(
                "location",
                **dict[str, Any](
                    {
                        "data.message.location": {
                            "latitude": 45.464211,
                            "longitude": 9.191383,
                            "name": None,
                            "address": None,
                        }
                    }
                ),
            )
        ],
    ),
    (
        "telegram",
        "venue.json",
        [
            tg_msg(
                "location",
                **dict[str, Any](
                    {
                        "data.message.location": {
                            "latitude": 45.464211,
                            "longitude": 9.191383,
                            "name": "Duomo di Milano",
                            "address": "Piazza del Duomo, Milano",
                        }
                    }
                ),
            )
        ],
    ),
    (
        "telegram",
        "contact.json",
        [tg_msg("contacts", **{"data.raw.message.contact.phone_number": "+393331234567"})],
    ),
    (
        "telegram",
        "reply_to.json",
        [tg_msg("text", **{"data.message.id": "600", "data.message.reply_to": "598"})],
    ),
    (
        "telegram",
        "forwarded.json",
        [tg_msg("text", **dict[str, Any]({"data.message.forwarded": True}))],
    ),
    (
        "telegram",
        "callback_query.json",
        [
            tg_msg(
                "reply",
                time=RECEIVED,
                **dict[str, Any](
                    {
                        "data.message.id": "4382bfdwdsb323b2d9",
                        "data.message.reply": {"id": "order:confirm:42", "title": "Confirm"},
                        "data.message.reply_to": "598",
                        "data.contact.id": "1760450482",
                    }
                ),
            )
        ],
    ),
    (
        "telegram",
        "my_chat_member_kicked.json",
        [
            {
                "type": "conversation.updated",
                "subject": TG,
                "time": "2021-05-21T06:20:00Z",
                "data.conversation": {"blocked": True, "referral": None},
            }
        ],
    ),
    (
        "telegram",
        "my_chat_member_member.json",
        [{"type": "conversation.updated", "subject": TG, "data.conversation.blocked": False}],
    ),
    (
        "telegram",
        "message_reaction.json",
        [
            tg_msg(
                "reaction",
                time="2021-05-21T06:38:20Z",
                **dict[str, Any](
                    {"data.message.reaction": {"message_id": "598", "emoji": "\U0001f44d"}}
                ),
            )
        ],
    ),
    (
        "telegram",
        "message_reaction_removed.json",
        [
            tg_msg(
                "reaction",
                time="2021-05-21T06:40:00Z",
                **dict[str, Any]({"data.message.reaction": {"message_id": "598", "emoji": ""}}),
            )
        ],
    ),
    (
        "telegram",
        "poll_message.json",
        [tg_msg("unsupported", **{"data.raw.message.poll.question": "Lunch?"})],
    ),
    (
        "telegram",
        "inline_query.json",
        [
            {
                "type": "unsupported",
                "subject": TG,
                "time": RECEIVED,
                "data.contact.id": "1760450482",
                "data.raw.inline_query.query": "shoes",
            }
        ],
    ),
    # ---------------------------------------------------------------- Twilio
    (
        "twilio",
        "sms.txt",
        [
            {
                "type": "message.received",
                "subject": SMS,
                "time": RECEIVED,
                "data.account_id": "+15017122661",
                "data.contact": {
                    "id": "+15558675310",
                    "name": None,
                    "phone": "+15558675310",
                    "username": None,
                },
                "data.message.id": "SM1f0e8ae6ade43cb3c0ce4525424e404f",
                "data.message.kind": "text",
                "data.message.text": "Hello from SMS",
                "data.raw.FromCity": "SAN FRANCISCO",
            }
        ],
    ),
    (
        "twilio",
        "mms.txt",
        [
            {
                "type": "message.received",
                "subject": SMS,
                "data.message.kind": "image",
                "data.message.text": "Two photos",
                "data.message.media.mime_type": "image/jpeg",
                "data.message.media.url": "https://api.twilio.com/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Messages/MM1f0e8ae6ade43cb3c0ce4525424e4050/Media/ME0",
                "data.raw.MediaContentType1": "image/png",
            }
        ],
    ),
    (
        "twilio",
        "whatsapp_text.txt",
        [
            {
                "type": "message.received",
                "subject": TWA,
                "data.account_id": "whatsapp:+14155238886",
                "data.contact": {
                    "id": "whatsapp:+14155550123",
                    "name": "Ana",
                    "phone": "+14155550123",
                    "username": None,
                },
                "data.message.kind": "text",
                "data.message.text": "Hola",
            }
        ],
    ),
    (
        "twilio",
        "whatsapp_button.txt",
        [
            {
                "subject": TWA,
                "data.message.kind": "reply",
                "data.message.reply": {"id": "confirm_order_42", "title": "Confirm"},
                "data.message.reply_to": "MM5cc400000000000000000000000000b0",
            }
        ],
    ),
    (
        "twilio",
        "whatsapp_location.txt",
        [
            {
                "subject": TWA,
                "data.message.kind": "location",
                "data.message.text": None,
                "data.message.location": {
                    "latitude": 45.464211,
                    "longitude": 9.191383,
                    "name": "Duomo",
                    "address": "Piazza del Duomo, Milano",
                },
            }
        ],
    ),
    (
        "twilio",
        "whatsapp_media.txt",
        [
            {
                "subject": TWA,
                "data.message.kind": "image",
                "data.message.text": None,
                "data.message.media.mime_type": "image/jpeg",
            }
        ],
    ),
    (
        "twilio",
        "whatsapp_reply.txt",
        [
            {
                "subject": TWA,
                "data.message.kind": "text",
                "data.message.reply_to": "SM5cc400000000000000000000000000c1",
                "data.message.forwarded": False,
            }
        ],
    ),
    (
        "twilio",
        "whatsapp_contacts.txt",
        [received(subject=TWA, **{"data.message.kind": "contacts"})],
    ),
    (
        "twilio",
        "event_streams.json",
        [
            received(subject="twilio:+12345678901:+11234567890", time="2025-01-01T00:00:00Z"),
            {"type": "message.status", "data.status.state": "delivered"},
            {"type": "unsupported", "time": "2025-01-01T00:01:00Z"},
        ],
    ),
    ("twilio", "status_queued.txt", [tw_status("sent", **{"data.raw.MessageStatus": "queued"})]),
    (
        "twilio",
        "status_sent.txt",
        [
            tw_status(
                "sent",
                **{"data.status.recipient_id": "+15558675310", "data.account_id": "+15017122661"},
            )
        ],
    ),
    (
        "twilio",
        "status_delivered.txt",
        [
            tw_status(
                "delivered",
                **dict[str, Any]({"data.status.error": None, "time": "2025-11-22T12:00:00Z"}),
            )
        ],
    ),
    (
        "twilio",
        "status_undelivered.txt",
        [
            tw_status(
                "failed",
                **dict[str, Any](
                    {
                        "data.status.error": {"code": "30003", "title": None, "detail": None},
                        "time": "2025-11-22T12:01:00Z",
                    }
                ),
            )
        ],
    ),
    ("twilio", "status_failed.txt", [tw_status("failed", **{"data.status.error.code": "30008"})]),
    (
        "twilio",
        "status_partially_delivered.txt",
        [{"type": "unsupported", "subject": SMS, "data.raw.MessageStatus": "partially_delivered"}],
    ),
    ("twilio", "whatsapp_status_read.txt", [tw_status("read", TWA)]),
    (
        "twilio",
        "whatsapp_status_failed.txt",
        [
            tw_status(
                "failed",
                TWA,
                **{
                    "data.status.error": {
                        "code": "63016",
                        "title": "Outside messaging window",
                        "detail": None,
                    }
                },
            )
        ],
    ),
    # ---------------------------------------------------------------- more branches
    (
        "whatsapp",
        "flow_completion.json",
        [
            wa_msg(
                "unsupported",
                **{
                    "data.message.text": "Sent",
                    "data.message.reply_to": "wamid.FLOW_MESSAGE=",
                    "data.raw.interactive.type": "nfm_reply",
                },
            )
        ],
    ),
    (
        "messenger",
        "standby.json",
        [ms_msg("text", mid="m_STANDBY", **{"data.message.text": "seen by the secondary app"})],
    ),
    (
        "telegram",
        "business_message.json",
        [tg_msg("text", **{"data.message.text": "Hi from a business chat"})],
    ),
    (
        "telegram",
        "deleted_business_messages.json",
        [
            {
                "type": "message.deleted",
                "subject": TG,
                "time": RECEIVED,
                "data.message.id": "591",
                "data.message.kind": None,
            },
            {"type": "message.deleted", "subject": TG, "data.message.id": "592"},
        ],
    ),
    (
        "telegram",
        "my_chat_member_group_left.json",
        [
            {
                "type": "conversation.updated",
                "subject": "telegram:7000000001:-1001234567890",
                "data.conversation.blocked": True,
                "data.contact.id": "1760450482",
            }
        ],
    ),
    (
        "twilio",
        "status_canceled.txt",
        [
            tw_status(
                "failed",
                **dict[str, Any]({"data.status.error": None, "data.raw.MessageStatus": "canceled"}),
            )
        ],
    ),
]


@pytest.mark.parametrize(
    ("platform", "name", "expected"), CASES, ids=[f"{p}/{n}" for p, n, _ in CASES]
)
def test_fixture_yields_the_canonical_events(
    platform: str, name: str, expected: list[dict[str, Any]]
) -> None:
    events = run(platform, load(platform, name))
    dumped = [e.model_dump(mode="json") for e in events]
    assert len(dumped) == len(expected), [d["type"] for d in dumped]
    for event, wanted in zip(dumped, expected, strict=True):
        assert event["specversion"] == "1.0"
        assert event["source"] == f"/switchboard/{platform}/ch_test"
        assert event["datacontenttype"] == "application/json"
        assert event["subject"] == event["data"]["conversation_id"]
        assert event["data"]["platform"] == platform
        assert event["data"]["raw"] is not None
        for dotted, value in wanted.items():
            assert path(event, dotted) == value, dotted


def test_every_fixture_file_is_covered() -> None:
    from .helpers import FIXTURES

    on_disk = {
        f"{p.parent.name}/{p.name}" for p in FIXTURES.glob("*/*") if p.suffix in {".json", ".txt"}
    }
    covered = {f"{p}/{n}" for p, n, _ in CASES}
    assert on_disk == covered


def test_dump_keeps_every_contract_key_with_nulls() -> None:
    event = run("whatsapp", load("whatsapp", "text.json"))[0]
    raw = dump_event(event)
    assert raw.startswith(b'{"specversion":"1.0","id":"')
    assert b'"status":null' in raw
    assert b'"media":null' in raw
    assert b'"raw":{"from":"16505551234"' in raw
    assert b'", "' not in raw
    assert b'": ' not in raw  # compact separators
