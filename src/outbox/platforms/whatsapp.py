"""WhatsApp Business Cloud API sender.

``POST {base}/{GRAPH_API_VERSION}/{phone_number_id}/messages`` with ``Authorization: Bearer``
(https://developers.facebook.com/documentation/business-messaging/whatsapp/messages/image-messages/).

Mapping of the contract (decisions documented here, see docs/platforms.md §1.4):
- text: ``text.body``; ``preview_url`` is true when the body contains an http(s) link.
- media: ``{kind: {"id" | "link", "caption", "filename"}}``; caption is refused for audio and
  stickers (WhatsApp shows none), filename is only sent for documents (a hint, dropped otherwise).
- template: ``{"name", "language": {"code"}, "components"}`` passed through.
- interactive: 1-3 buttons -> reply buttons (title <= 20 chars); 4-10 -> a single-section list
  (row title <= 24 chars) whose opening button reads ``metadata["whatsapp_list_button"]``
  (default "Options"); more than 10 is refused.
- reaction: ``{"message_id", "emoji"}``; an empty emoji removes the reaction.
- reply_to: ``context.message_id``.
- typing: ``{"status": "read", "message_id", "typing_indicator": {"type": "text"}}`` (needs the
  customer's message id; it also marks that message read); mark_read: ``{"status": "read",
  "message_id"}``. The answer is ``{"success": true}``: no platform message id
  (https://developers.facebook.com/documentation/business-messaging/whatsapp/typing-indicators/).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from normalizer.models import MessageEvent
from outbox.contracts import Media, SendCommand
from outbox.platforms._graph import graph_send
from outbox.platforms.base import ChannelConfig, ErrorRule, SendResult, UnsupportedContent
from outbox.platforms.http import HttpClient
from outbox.ratelimit import Rate

MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_REPLY_BUTTONS = 3
MAX_BUTTON_TITLE = 20
MAX_LIST_ROWS = 10
MAX_ROW_TITLE = 24
MAX_INTERACTIVE_BODY = 1024
MAX_BUTTON_ID = 200
DEFAULT_LIST_BUTTON = "Options"

_URL = re.compile(r"https?://", re.IGNORECASE)

_RETRY = ErrorRule(retryable=True)
_CHANNEL_THROTTLE = ErrorRule(retryable=True, throttle="channel")
_PERMANENT = ErrorRule(retryable=False)

# Codes: Meta error-codes page and pywa/errors.py (docs/platforms.md §1.5).
# https://developers.facebook.com/documentation/business-messaging/whatsapp/support/error-codes
# https://developers.facebook.com/documentation/business-messaging/whatsapp/throughput
ERRORS: Mapping[int, ErrorRule] = {
    # Throttling: slow the whole sender number down.
    4: _CHANNEL_THROTTLE,  # too many API calls (app)
    80007: _CHANNEL_THROTTLE,  # WABA rate limit
    130429: _CHANNEL_THROTTLE,  # throughput (80 / 1,000 mps) exceeded
    133016: _CHANNEL_THROTTLE,  # register/deregister attempts
    131048: ErrorRule(retryable=True, throttle="channel", retry_after=3600.0),  # spam rate limit
    # Pair rate limit: only this recipient waits.
    131056: ErrorRule(retryable=True, throttle="recipient", retry_after=6.0),
    # Transient.
    1: _RETRY,  # API unknown
    2: _RETRY,  # temporary downtime / overload
    131000: _RETRY,  # something went wrong
    131016: _RETRY,  # service unavailable
    131057: _RETRY,  # account in maintenance mode (also seen during throughput upgrade)
    # Permanent for this message.
    0: _PERMANENT,
    3: _PERMANENT,
    10: _PERMANENT,
    100: _PERMANENT,  # invalid parameter
    190: ErrorRule(retryable=False, credentials=True),  # access token expired
    200: _PERMANENT,
    368: _PERMANENT,  # temporarily blocked for policy violations: operator action
    130472: _PERMANENT,  # user in experiment
    130497: _PERMANENT,  # restricted from country
    131005: _PERMANENT,  # access denied
    131008: _PERMANENT,  # required parameter missing
    131009: _PERMANENT,  # parameter value invalid
    131021: _PERMANENT,  # recipient is the sender
    131026: _PERMANENT,  # message undeliverable
    131030: _PERMANENT,  # recipient not in allowed list
    131031: _PERMANENT,  # account locked
    131037: _PERMANENT,  # display name not approved
    131042: _PERMANENT,  # payment issue
    131045: _PERMANENT,  # certificate
    131047: _PERMANENT,  # re-engagement: outside the 24 h window, use a template
    131049: _PERMANENT,  # not delivered for ecosystem engagement
    131050: _PERMANENT,  # user stopped marketing messages
    131051: _PERMANENT,  # unsupported message type
    131052: _PERMANENT,  # media download error
    131053: _PERMANENT,  # media upload error
    131062: _PERMANENT,
    131063: _PERMANENT,
    137000: _PERMANENT,
    132000: _PERMANENT,  # template param count mismatch
    132001: _PERMANENT,  # template does not exist
    132005: _PERMANENT,  # template hydrated text too long
    132007: _PERMANENT,  # template format policy
    132008: _PERMANENT,  # template parameter format
    132012: _PERMANENT,  # template parameter format mismatch
    132015: _PERMANENT,  # template paused
    132016: _PERMANENT,  # template disabled
    132068: _PERMANENT,  # flow blocked
    132069: _PERMANENT,  # flow throttled
}


class WhatsAppSender:
    platform = "whatsapp"
    channel_rate = Rate(80)
    """80 mps per number by default, up to 1,000 (docs/platforms.md §1.5, Meta "Throughput");
    Meta counts inbound messages in the same budget, 130429 then slows us down."""
    audio_video_rate: Rate | None = None

    def recipient_rate(self, recipient: str, *, configured_pair: Rate | None = None) -> Rate | None:
        """The pair limit (131056) has no official figure (a third-party "1 per 6 s" is
        unverified), so pair pacing is off unless configured; a 131056 answer penalizes the
        recipient key instead."""
        return configured_pair

    def automatic_answer(self, event: MessageEvent) -> SendCommand | None:
        return None

    def validate(self, command: SendCommand, *, account_id: str | None = None) -> None:
        self._build(command)

    def _build(self, command: SendCommand) -> dict[str, Any]:
        content = command.content
        if content.callback_answer is not None:
            raise UnsupportedContent("callback answers are for Telegram button presses only")
        if content.typing is not None or content.mark_read is not None:
            return _signal(command)
        body: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": command.to,
        }
        if content.text is not None:
            if len(content.text) > MAX_TEXT:
                raise UnsupportedContent(f"WhatsApp text is limited to {MAX_TEXT} characters")
            body["type"] = "text"
            body["text"] = {"body": content.text, "preview_url": bool(_URL.search(content.text))}
        elif content.media is not None:
            body["type"] = content.media.kind
            body[content.media.kind] = _media(content.media)
        elif content.template is not None:
            template: dict[str, Any] = {
                "name": content.template.name,
                "language": {"code": content.template.language},
            }
            if content.template.components:
                template["components"] = list(content.template.components)
            body["type"] = "template"
            body["template"] = template
        elif content.interactive is not None:
            body["type"] = "interactive"
            body["interactive"] = _interactive(command)
        elif content.reaction is not None:
            body["type"] = "reaction"
            body["reaction"] = {
                "message_id": content.reaction.message_id,
                "emoji": content.reaction.emoji,
            }
        if command.reply_to is not None:
            body["context"] = {"message_id": command.reply_to}
        return body

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


def _signal(command: SendCommand) -> dict[str, Any]:
    content = command.content
    if content.mark_read is not None:
        return {
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": content.mark_read.message_id,
        }
    assert content.typing is not None
    if content.typing.message_id is None:
        raise UnsupportedContent(
            "WhatsApp typing indicators need content.typing.message_id: the id of the "
            "customer's message being answered (WhatsApp also marks it read)"
        )
    return {
        "messaging_product": "whatsapp",
        "status": "read",
        "message_id": content.typing.message_id,
        "typing_indicator": {"type": "text"},
    }


def _media(media: Media) -> dict[str, Any]:
    out: dict[str, Any] = {"id": media.id} if media.id is not None else {"link": media.url}
    if media.caption:
        if media.kind in ("audio", "sticker"):
            raise UnsupportedContent(f"WhatsApp {media.kind} messages cannot carry a caption")
        if len(media.caption) > MAX_CAPTION:
            raise UnsupportedContent(f"WhatsApp captions are limited to {MAX_CAPTION} characters")
        out["caption"] = media.caption
    if media.filename and media.kind == "document":
        out["filename"] = media.filename
    return out


def _interactive(command: SendCommand) -> dict[str, Any]:
    interactive = command.content.interactive
    assert interactive is not None
    if len(interactive.body) > MAX_INTERACTIVE_BODY:
        raise UnsupportedContent(
            f"WhatsApp interactive body is limited to {MAX_INTERACTIVE_BODY} characters"
        )
    buttons = interactive.buttons
    for button in buttons:
        if len(button.id) > MAX_BUTTON_ID:
            raise UnsupportedContent(
                f"WhatsApp button ids are limited to {MAX_BUTTON_ID} characters"
            )
    if len(buttons) <= MAX_REPLY_BUTTONS:
        for button in buttons:
            if len(button.title) > MAX_BUTTON_TITLE:
                raise UnsupportedContent(
                    f"WhatsApp reply button titles are limited to {MAX_BUTTON_TITLE} characters "
                    f"({button.title!r})"
                )
        return {
            "type": "button",
            "body": {"text": interactive.body},
            "action": {
                "buttons": [
                    {"type": "reply", "reply": {"id": b.id, "title": b.title}} for b in buttons
                ]
            },
        }
    if len(buttons) > MAX_LIST_ROWS:
        raise UnsupportedContent(
            f"WhatsApp offers at most {MAX_REPLY_BUTTONS} reply buttons or a list of "
            f"{MAX_LIST_ROWS} rows; got {len(buttons)} choices"
        )
    for button in buttons:
        if len(button.title) > MAX_ROW_TITLE:
            raise UnsupportedContent(
                f"WhatsApp list row titles are limited to {MAX_ROW_TITLE} characters "
                f"({button.title!r})"
            )
    label = command.metadata.get("whatsapp_list_button", DEFAULT_LIST_BUTTON)
    if not isinstance(label, str) or not 0 < len(label) <= MAX_BUTTON_TITLE:
        raise UnsupportedContent(
            f"metadata.whatsapp_list_button must be a string of 1-{MAX_BUTTON_TITLE} characters"
        )
    return {
        "type": "list",
        "body": {"text": interactive.body},
        "action": {
            "button": label,
            "sections": [{"rows": [{"id": b.id, "title": b.title} for b in buttons]}],
        },
    }


def _message_id(payload: object) -> str | None:
    if isinstance(payload, dict):
        messages = payload.get("messages")
        if isinstance(messages, list) and messages and isinstance(messages[0], dict):
            wamid = messages[0].get("id")
            if isinstance(wamid, str):
                return wamid
    return None
