"""Messenger and Instagram (Messenger Platform) Send API sender.

``POST {base}/{GRAPH_API_VERSION}/{page_id | ig_id}/messages`` with a Bearer page token; the
Instagram body shape is the Messenger one (docs/platforms.md §2.4, §3.4;
https://developers.facebook.com/docs/messenger-platform/reference/send-api).

Mapping of the contract (decisions):
- ``messaging_type`` is ``RESPONSE``. ``metadata["message_tag"]`` (e.g. ``"HUMAN_AGENT"``)
  switches to ``messaging_type: MESSAGE_TAG`` with that ``tag``, for sends outside the 24 h
  standard window (policy: https://developers.facebook.com/docs/messenger-platform/policy/policy-overview-aug-2019).
- text -> ``message.text``: Messenger <= 2000 characters; Instagram <= 1000 bytes of UTF-8
  ("text must be UTF-8 and less than 1000 bytes",
  https://developers.facebook.com/docs/messenger-platform/instagram/features/send-message),
  so an emoji-heavy Instagram text may hold far fewer than 1000 characters.
- media -> ``message.attachment {type, payload {url, is_reusable} | {attachment_id}}``; document
  maps to ``file``. Captions cannot be attached to an attachment and are refused; stickers are
  refused; Instagram has no ``file`` attachments. ``filename`` is a hint and is dropped.
- interactive -> ``message.text`` (the same limits as text) + ``quick_replies`` (<= 13,
  title <= 20 chars, payload = id).
- reaction -> ``sender_action: react`` with ``payload {message_id, reaction}``; an empty emoji
  is ``unreact`` (https://developers.facebook.com/documentation/business-messaging/messenger-platform/send-messages/sender-actions).
  Instagram accepts only the "love" reaction, so only a heart emoji (or "love") is allowed there.
- typing -> ``sender_action: typing_on``; mark_read -> ``sender_action: mark_seen`` (the Send
  API marks the whole conversation seen and takes no message id, so ``mark_read.message_id`` is
  not sent). Both answer ``{"recipient_id"}`` without a message id
  (https://developers.facebook.com/documentation/business-messaging/messenger-platform/send-messages/sender-actions).
- template and reply_to are refused: Messenger has no pre-approved templates in our sense and we
  have no verified quoted-reply field, so such a command would be sent half-right.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from normalizer.models import MessageEvent
from outbox.contracts import SendCommand
from outbox.platforms._graph import graph_send
from outbox.platforms.base import ChannelConfig, ErrorRule, SendResult, UnsupportedContent
from outbox.platforms.http import HttpClient
from outbox.ratelimit import Rate

MAX_TEXT = 2000
"""Messenger text, in characters."""
MAX_INSTAGRAM_TEXT_BYTES = 1000
"""Instagram text, in bytes of UTF-8."""
MAX_QUICK_REPLIES = 13
MAX_QUICK_REPLY_TITLE = 20
MAX_PAYLOAD = 1000
INSTAGRAM_REACTIONS = frozenset({"love", "\u2764", "\u2764\ufe0f"})

# https://developers.facebook.com/documentation/business-messaging/messenger-platform/send-messages/message-tags
MESSAGE_TAGS = frozenset(
    {
        "ACCOUNT_UPDATE",
        "CONFIRMED_EVENT_UPDATE",
        "POST_PURCHASE_UPDATE",
        "HUMAN_AGENT",
        "CUSTOMER_FEEDBACK",
    }
)

_ATTACHMENT_TYPES: Mapping[str, str] = {
    "image": "image",
    "video": "video",
    "audio": "audio",
    "document": "file",
}

_RETRY = ErrorRule(retryable=True)
_CHANNEL_THROTTLE = ErrorRule(retryable=True, throttle="channel")
_PERMANENT = ErrorRule(retryable=False)

# https://developers.facebook.com/documentation/business-messaging/messenger-platform/error-codes
# and codes observed in the wild (docs/platforms.md §2.5).
ERRORS: Mapping[int, ErrorRule] = {
    4: _CHANNEL_THROTTLE,  # application request limit reached
    17: _CHANNEL_THROTTLE,  # user request limit reached
    32: _CHANNEL_THROTTLE,  # page request limit reached
    613: _CHANNEL_THROTTLE,  # calls to this api have exceeded the rate limit
    1: _RETRY,  # unknown error
    2: _RETRY,  # "unexpected error, please retry your request later"
    1200: _RETRY,  # temporary send message failure (unverified)
    10: _PERMANENT,  # permission denied; subcode 2018278: outside the allowed window
    100: _PERMANENT,  # invalid parameter / no matching user (2018001)
    190: ErrorRule(retryable=False, credentials=True),  # invalid OAuth access token
    200: _PERMANENT,  # permissions error
    230: _PERMANENT,  # requires pages_messaging permission
    551: _PERMANENT,  # this person isn't available right now
}


class MetaMessengerSender:
    """One class for both products; ``platform`` is ``"messenger"`` or ``"instagram"``."""

    channel_rate = Rate(300)
    """300 calls/s per Page / IG account for text, links, reactions and stickers (docs/platforms.md
    §2.5, §3.4, Messenger rate-limiting page); a throttle answer backs the channel off."""
    audio_video_rate: Rate | None = Rate(10)
    """10 calls/s for audio or video, a budget of its own next to the channel's."""

    def recipient_rate(self, recipient: str, *, configured_pair: Rate | None = None) -> Rate | None:
        """Meta documents no per-recipient pace."""
        return None

    def automatic_answer(self, event: MessageEvent) -> SendCommand | None:
        return None

    def __init__(self, platform: Literal["messenger", "instagram"]) -> None:
        self.platform: str = platform

    def validate(self, command: SendCommand, *, account_id: str | None = None) -> None:
        self._build(command)

    def _build(self, command: SendCommand) -> dict[str, Any]:
        content = command.content
        name = self.platform.capitalize()
        if command.reply_to is not None:
            raise UnsupportedContent(f"{name}: quoted replies (reply_to) are not supported")
        if content.callback_answer is not None:
            raise UnsupportedContent("callback answers are for Telegram button presses only")
        body: dict[str, Any] = {"recipient": {"id": command.to}}
        if content.typing is not None or content.mark_read is not None:
            body["sender_action"] = "typing_on" if content.typing is not None else "mark_seen"
            return body
        if content.reaction is not None:
            emoji = content.reaction.emoji
            if not emoji:
                body["sender_action"] = "unreact"
                body["payload"] = {"message_id": content.reaction.message_id}
                return body
            if self.platform == "instagram":
                if emoji not in INSTAGRAM_REACTIONS:
                    raise UnsupportedContent("Instagram only supports the 'love' (heart) reaction")
                emoji = "love"
            body["sender_action"] = "react"
            body["payload"] = {"message_id": content.reaction.message_id, "reaction": emoji}
            return body

        message: dict[str, Any]
        if content.text is not None:
            self._check_text(content.text)
            message = {"text": content.text}
        elif content.media is not None:
            media = content.media
            attachment_type = _ATTACHMENT_TYPES.get(media.kind)
            if attachment_type is None:
                raise UnsupportedContent(f"{name} cannot send {media.kind} attachments")
            if self.platform == "instagram" and attachment_type == "file":
                raise UnsupportedContent("Instagram cannot send document (file) attachments")
            if media.caption:
                raise UnsupportedContent(
                    f"{name} attachments cannot carry a caption; send the text separately"
                )
            payload: dict[str, Any] = (
                {"attachment_id": media.id}
                if media.id is not None
                else {"url": media.url, "is_reusable": True}
            )
            message = {"attachment": {"type": attachment_type, "payload": payload}}
        elif content.interactive is not None:
            interactive = content.interactive
            self._check_text(interactive.body)
            if len(interactive.buttons) > MAX_QUICK_REPLIES:
                raise UnsupportedContent(
                    f"{name} allows at most {MAX_QUICK_REPLIES} quick replies, "
                    f"got {len(interactive.buttons)}"
                )
            for button in interactive.buttons:
                if len(button.title) > MAX_QUICK_REPLY_TITLE:
                    raise UnsupportedContent(
                        f"{name} quick reply titles are limited to {MAX_QUICK_REPLY_TITLE} "
                        f"characters ({button.title!r})"
                    )
                if len(button.id) > MAX_PAYLOAD:
                    raise UnsupportedContent(
                        f"{name} quick reply payloads are limited to {MAX_PAYLOAD} characters"
                    )
            message = {
                "text": interactive.body,
                "quick_replies": [
                    {"content_type": "text", "title": b.title, "payload": b.id}
                    for b in interactive.buttons
                ],
            }
        else:
            raise UnsupportedContent(
                f"{name} has no pre-approved templates; send text with metadata.message_tag "
                "outside the 24 h window"
            )
        body.update(_messaging_type(name, command))
        body["message"] = message
        return body

    def _check_text(self, text: str) -> None:
        if self.platform == "instagram":
            size = len(text.encode("utf-8", errors="surrogatepass"))
            if size > MAX_INSTAGRAM_TEXT_BYTES:
                raise UnsupportedContent(
                    f"Instagram text is limited to {MAX_INSTAGRAM_TEXT_BYTES} bytes of UTF-8 "
                    f"(this one is {size} bytes, {len(text)} characters)"
                )
        elif len(text) > MAX_TEXT:
            raise UnsupportedContent(f"Messenger text is limited to {MAX_TEXT} characters")

    async def send(
        self,
        client: HttpClient,
        channel: ChannelConfig,
        command: SendCommand,
        *,
        timeout: float,  # noqa: ASYNC109 - the Sender contract; enforced inside post()
    ) -> SendResult:
        return await graph_send(
            client,
            channel,
            self._build(command),
            errors=ERRORS,
            timeout=timeout,
            message_id=_message_id,
        )


def _messaging_type(name: str, command: SendCommand) -> dict[str, str]:
    tag = command.metadata.get("message_tag")
    if tag is None:
        return {"messaging_type": "RESPONSE"}
    if not isinstance(tag, str) or tag not in MESSAGE_TAGS:
        raise UnsupportedContent(
            f"{name}: metadata.message_tag must be one of {', '.join(sorted(MESSAGE_TAGS))}"
        )
    return {"messaging_type": "MESSAGE_TAG", "tag": tag}


def _message_id(payload: object) -> str | None:
    mid = payload.get("message_id") if isinstance(payload, dict) else None
    return mid if isinstance(mid, str) else None
