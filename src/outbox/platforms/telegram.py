"""Telegram Bot API sender.

``POST {base}/bot{token}/{method}`` with a JSON body (https://core.telegram.org/bots/api;
docs/platforms.md §4.4). The token is part of the URL path, so every error text is scrubbed.

Mapping of the contract (decisions):
- text -> ``sendMessage`` (<= 4096 chars).
- media -> ``sendPhoto | sendVideo | sendAudio | sendDocument | sendSticker``; the media ``id``
  (a file_id) or ``url`` goes in the same field, caption <= 1024 chars, none on stickers.
  ``metadata["telegram_voice"] = true`` sends an audio as a voice note (``sendVoice``).
  ``filename`` is a hint Telegram cannot apply to a URL or file_id and is dropped.
- interactive -> ``sendMessage`` with ``reply_markup.inline_keyboard``, one button per row,
  ``callback_data`` = button id (1-64 bytes).
- reaction -> ``setMessageReaction`` with ``[{"type": "emoji", "emoji": e}]`` or ``[]`` to remove.
  Bots may only use the fixed emoji list of ``ReactionTypeEmoji`` (``REACTION_EMOJI``); any
  other emoji is refused up front (Telegram answers 400 REACTION_INVALID). U+FE0F (emoji
  presentation selector) is dropped first, so ``❤️`` is sent as the listed ``❤``.
- reply_to -> ``reply_parameters.message_id`` (an integer message id).
- template -> refused: Telegram has no templates.
- typing -> ``sendChatAction`` with ``action: "typing"`` (shown for 5 s or until the bot's next
  message); mark_read -> refused: bots cannot mark messages read
  (https://core.telegram.org/bots/api#sendchataction).
- callback_answer -> ``answerCallbackQuery`` with ``callback_query_id``, ``text``, ``show_alert``
  (https://core.telegram.org/bots/api#answercallbackquery); the answer is ``true``.
A numeric ``to`` is sent as an integer ``chat_id``; ``@channelusername`` as given.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from normalizer.models import MessageEvent
from outbox.contracts import CallbackAnswer, Content, SendCommand
from outbox.platforms.base import (
    ChannelConfig,
    ErrorRule,
    SendResult,
    UnsupportedContent,
    api_base,
    excerpt,
    missing_credential,
    parse_json,
    parse_retry_after,
    result_from_rule,
    retry_after_seconds,
    sent,
)
from outbox.platforms.http import HttpClient, HttpExchange, post
from outbox.platforms.scrub import scrub
from outbox.ratelimit import Rate

TELEGRAM_BASE_URL = "https://api.telegram.org"
TELEGRAM_PRIVATE_CHAT = Rate(1, 1.0)  # "avoid sending more than one message per second"
TELEGRAM_GROUP_CHAT = Rate(20, 60.0)  # "not more than 20 messages per minute to the same group"
MAX_TEXT = 4096
MAX_CAPTION = 1024
MAX_CALLBACK_DATA = 64

# https://core.telegram.org/bots/api#reactiontypeemoji, in the order listed there. Written
# without U+FE0F; the ZWJ sequences are spelled out because U+200D is invisible.
REACTION_EMOJI: frozenset[str] = frozenset(
    {
        "👍", "👎", "❤", "🔥", "🥰", "👏", "😁", "🤔", "🤯", "😱", "🤬", "😢", "🎉", "🤩",
        "🤮", "💩", "🙏", "👌", "🕊", "🤡", "🥱", "🥴", "😍", "🐳",
        "\u2764\u200d\U0001f525",  # heart on fire
        "🌚", "🌭", "💯", "🤣", "⚡", "🍌", "🏆", "💔", "🤨", "😐", "🍓", "🍾", "💋", "🖕",
        "😈", "😴", "😭", "🤓", "👻",
        "\U0001f468\u200d\U0001f4bb",  # man technologist
        "👀", "🎃", "🙈", "😇", "😨", "🤝", "✍", "🤗", "🫡", "🎅", "🎄", "☃", "💅", "🤪",
        "🗿", "🆒", "💘", "🙉", "🦄", "😘", "💊", "🙊", "😎", "👾",
        "\U0001f937\u200d\u2642",  # man shrugging
        "🤷",
        "\U0001f937\u200d\u2640",  # woman shrugging
        "😡",
    }
)  # fmt: skip
_VARIATION_SELECTOR = "\ufe0f"

_MEDIA_METHODS: Mapping[str, tuple[str, str]] = {
    "image": ("sendPhoto", "photo"),
    "video": ("sendVideo", "video"),
    "audio": ("sendAudio", "audio"),
    "document": ("sendDocument", "document"),
    "sticker": ("sendSticker", "sticker"),
}

# The Bot API's error_code mirrors the HTTP status; ``parameters.retry_after`` accompanies 429.
# https://core.telegram.org/bots/api#making-requests, https://core.telegram.org/bots/faq
ERRORS: Mapping[int, ErrorRule] = {
    429: ErrorRule(retryable=True, throttle="channel"),  # flood control
    400: ErrorRule(retryable=False),  # bad request: chat not found, message to reply not found…
    401: ErrorRule(retryable=False, credentials=True),  # bad bot token
    403: ErrorRule(retryable=False),  # bot blocked by the user / kicked from the group
    404: ErrorRule(retryable=False),
    409: ErrorRule(retryable=False),
}


def _chat_id(to: str) -> int | str:
    stripped = to[1:] if to.startswith("-") else to
    return int(to) if stripped.isdigit() else to


def _message_id(value: str, what: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise UnsupportedContent(f"Telegram {what} must be an integer message id") from None


class TelegramSender:
    platform = "telegram"
    channel_rate = Rate(30)
    """30 msg/s per bot for bulk sends (docs/platforms.md §4.5, Bot FAQ)."""
    audio_video_rate: Rate | None = None

    def recipient_rate(self, recipient: str, *, configured_pair: Rate | None = None) -> Rate | None:
        """Groups have negative ids; channels may be addressed as ``@username``."""
        group = recipient.startswith(("-", "@"))
        return TELEGRAM_GROUP_CHAT if group else TELEGRAM_PRIVATE_CHAT

    def automatic_answer(self, event: MessageEvent) -> SendCommand | None:
        """A button press (``callback_query``) is answered with ``answerCallbackQuery``, once
        per event (the command id is derived from the event id)."""
        data = event.data
        raw = data.raw
        if event.type != "message.received":
            return None
        if not isinstance(raw, dict) or not isinstance(raw.get("callback_query"), dict):
            return None
        query_id = data.message.id
        chat = data.conversation_id.rpartition(":")[2]
        if not query_id or not chat or chat == "-" or len(query_id) > 300:
            return None
        return SendCommand(
            id=f"auto:answer:{event.id}",
            channel_id=data.channel_id,
            to=chat,
            content=Content(
                kind="callback_answer",
                callback_answer=CallbackAnswer(callback_query_id=query_id),
            ),
        )

    def validate(self, command: SendCommand, *, account_id: str | None = None) -> None:
        self._build(command)

    def _build(self, command: SendCommand) -> tuple[str, dict[str, Any]]:
        content = command.content
        chat_id = _chat_id(command.to)
        if content.typing is not None:
            return "sendChatAction", {"chat_id": chat_id, "action": "typing"}
        if content.mark_read is not None:
            raise UnsupportedContent("Telegram bots cannot mark messages as read")
        if content.callback_answer is not None:
            answer = content.callback_answer
            fields: dict[str, Any] = {"callback_query_id": answer.callback_query_id}
            if answer.text is not None:
                fields["text"] = answer.text
            if answer.show_alert:
                fields["show_alert"] = True
            return "answerCallbackQuery", fields
        if content.reaction is not None:
            emoji = _reaction_emoji(content.reaction.emoji)
            return "setMessageReaction", {
                "chat_id": chat_id,
                "message_id": _message_id(content.reaction.message_id, "reaction.message_id"),
                "reaction": [{"type": "emoji", "emoji": emoji}] if emoji else [],
            }
        method: str
        body: dict[str, Any] = {"chat_id": chat_id}
        if content.text is not None:
            _check_len("text", content.text, MAX_TEXT)
            method = "sendMessage"
            body["text"] = content.text
        elif content.media is not None:
            media = content.media
            method, field = _MEDIA_METHODS[media.kind]
            if media.kind == "audio" and command.metadata.get("telegram_voice") is True:
                method, field = "sendVoice", "voice"
            body[field] = media.id if media.id is not None else media.url
            if media.caption:
                if media.kind == "sticker":
                    raise UnsupportedContent("Telegram stickers cannot carry a caption")
                _check_len("caption", media.caption, MAX_CAPTION)
                body["caption"] = media.caption
        elif content.interactive is not None:
            interactive = content.interactive
            _check_len("text", interactive.body, MAX_TEXT)
            for button in interactive.buttons:
                if len(button.id.encode()) > MAX_CALLBACK_DATA:
                    raise UnsupportedContent(
                        f"Telegram callback_data (button id) is limited to {MAX_CALLBACK_DATA} "
                        f"bytes ({button.id!r})"
                    )
            method = "sendMessage"
            body["text"] = interactive.body
            body["reply_markup"] = {
                "inline_keyboard": [
                    [{"text": b.title, "callback_data": b.id}] for b in interactive.buttons
                ]
            }
        else:
            raise UnsupportedContent("Telegram has no message templates; send text instead")
        if command.reply_to is not None:
            body["reply_parameters"] = {"message_id": _message_id(command.reply_to, "reply_to")}
        return method, body

    async def send(
        self,
        client: HttpClient,
        channel: ChannelConfig,
        command: SendCommand,
        *,
        timeout: float,  # noqa: ASYNC109 - the Sender contract; enforced inside post()
    ) -> SendResult:
        token = channel.credentials.get("bot_token")
        if not token:
            return missing_credential("bot_token")
        secrets = (token,)
        method, body = self._build(command)
        base = api_base(channel, TELEGRAM_BASE_URL)
        if isinstance(base, SendResult):
            return base
        exchange = await post(
            client, f"{base}/bot{token}/{method}", timeout=timeout, secrets=secrets, json_body=body
        )
        if isinstance(exchange, SendResult):
            return exchange
        payload = parse_json(exchange.body)
        if isinstance(payload, dict) and payload.get("ok") is True and exchange.status < 300:
            result = payload.get("result")
            message_id = result.get("message_id") if isinstance(result, dict) else None
            return sent(str(message_id) if message_id is not None else None, exchange, secrets)
        return _failure(exchange, payload, secrets)


def _reaction_emoji(emoji: str) -> str:
    """The emoji as Telegram lists it (U+FE0F dropped); "" (remove the reaction) as is."""
    normalised = emoji.replace(_VARIATION_SELECTOR, "")
    if emoji and normalised not in REACTION_EMOJI:
        raise UnsupportedContent(
            f"Telegram bots can only react with the emoji listed for ReactionTypeEmoji "
            f"(https://core.telegram.org/bots/api#reactiontypeemoji); {emoji!r} is not one"
        )
    return normalised


def _check_len(what: str, text: str, limit: int) -> None:
    if len(text) > limit:
        raise UnsupportedContent(f"Telegram {what} is limited to {limit} characters")


def _failure(exchange: HttpExchange, payload: object, secrets: tuple[str, ...]) -> SendResult:
    code = exchange.status
    title: str | None = None
    retry_after = parse_retry_after(exchange.headers.get("retry-after"))
    if isinstance(payload, dict):
        raw_code = payload.get("error_code")
        if isinstance(raw_code, int):
            code = raw_code
        description = payload.get("description")
        if isinstance(description, str):
            title = scrub(description, secrets)
        parameters = payload.get("parameters")
        if isinstance(parameters, dict):
            hint = retry_after_seconds(parameters.get("retry_after"))
            if hint is not None:
                retry_after = hint
            migrated = parameters.get("migrate_to_chat_id")
            if isinstance(migrated, int):
                title = f"{title or 'group migrated'} (migrate_to_chat_id {migrated})"
    return result_from_rule(
        ERRORS.get(code),
        status=exchange.status,
        code=str(code),
        title=title,
        retry_after=retry_after,
        body_excerpt=excerpt(exchange.body, secrets),
        duration_ms=exchange.duration_ms,
    )
