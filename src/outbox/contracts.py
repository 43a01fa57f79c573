"""Versioned outbound contracts (docs/contracts.md §6): the send command and the lifecycle
event data.

These are wire contracts shared with other teams, so they are strict on input: unknown fields
are rejected (a typo such as ``captoin`` must fail loudly with 422 rather than send a message
without its caption) and the sub-object matching ``content.kind`` must be present while the
others stay empty. Platform-specific limits (button counts, lengths, what a platform cannot
express at all) are checked by each platform's ``Sender.validate``, not here.

``typing``, ``mark_read`` and ``callback_answer`` are *signals*, not messages: a typing
indicator, a read mark ("blue ticks") on the customer's message, the answer that stops a Telegram
button's spinner. They are useless late, so unless the command says
otherwise they expire ``SIGNAL_TTL_SECONDS`` after acceptance (and a later ``not_after`` is
shortened to that), rather than being retried for hours like a message.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, JsonValue, model_validator

from infra.schema_types import NonEmptyText, Text, holds_nul, no_nul

__all__ = [
    "CHANNEL_EVENT_TYPES",
    "COMMAND_ID_MAX",
    "CONTRACT_VERSION",
    "LIFECYCLE_EVENT_TYPES",
    "METADATA_MAX_BYTES",
    "RECIPIENT_MAX",
    "REPLY_TO_MAX",
    "SEND_COMMAND_TYPE",
    "SIGNAL_KINDS",
    "SIGNAL_TTL_SECONDS",
    "Button",
    "CallbackAnswer",
    "ChannelError",
    "ChannelEventData",
    "ChannelEventType",
    "CommandId",
    "Content",
    "ContentKind",
    "Interactive",
    "Lane",
    "LifecycleError",
    "LifecycleEventData",
    "LifecycleEventType",
    "MarkRead",
    "Media",
    "MediaKind",
    "Metadata",
    "Reaction",
    "Recipient",
    "ReplyTo",
    "SendCommand",
    "Template",
    "Typing",
    "signal_not_after",
]

CONTRACT_VERSION = "v1"
"""Topic suffix of ``switchboard.outbound.commands.v1`` / ``switchboard.outbound.events.v1``."""

SEND_COMMAND_TYPE = "message.send"

LifecycleEventType = Literal[
    "message.queued",
    "message.sent",
    "message.retrying",
    "message.delivered",
    "message.read",
    "message.failed",
    "message.dead",
    "message.cancelled",
]
LIFECYCLE_EVENT_TYPES: tuple[LifecycleEventType, ...] = (
    "message.queued",
    "message.sent",
    "message.retrying",
    "message.delivered",
    "message.read",
    "message.failed",
    "message.dead",
    "message.cancelled",
)

ContentKind = Literal[
    "text",
    "media",
    "template",
    "interactive",
    "reaction",
    "typing",
    "mark_read",
    "callback_answer",
]
SIGNAL_KINDS: frozenset[str] = frozenset({"typing", "mark_read", "callback_answer"})
SIGNAL_TTL_SECONDS = 10.0
"""Lifetime of a typing indicator or read mark: WhatsApp drops its indicator after 25 s, and a
read mark or indicator that arrives after the reply it announced is worse than none."""
Lane = Literal["reply", "bulk"]
"""The two shares of a channel's rate (``outbox.lanes``)."""

MediaKind = Literal["image", "video", "audio", "document", "sticker"]

NonEmptyStr = NonEmptyText
"""This module's name for a non-empty string without NUL (``infra.schema_types``)."""

COMMAND_ID_MAX = 200
RECIPIENT_MAX = 200
REPLY_TO_MAX = 300
"""Lengths (characters) of the ``outbox_messages`` columns the command's ``id``, ``to`` and
``reply_to`` are stored in: longer values are refused here, not by a failing INSERT."""
CommandId = Annotated[str, Field(min_length=1, max_length=COMMAND_ID_MAX), AfterValidator(no_nul)]
Recipient = Annotated[str, Field(min_length=1, max_length=RECIPIENT_MAX), AfterValidator(no_nul)]
ReplyTo = Annotated[str, Field(min_length=1, max_length=REPLY_TO_MAX), AfterValidator(no_nul)]

METADATA_MAX_BYTES = 16 * 1024
"""Bound of the command's ``metadata`` as compact JSON (orjson). It is echoed in every lifecycle
event, which must fit in one Kafka record: an unbounded one would make its events unpublishable."""


def _bounded_metadata(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    try:
        encoded = orjson.dumps(value)
    except orjson.JSONEncodeError:
        if holds_nul(value):
            raise ValueError("strings must not contain the NUL character (\\u0000)") from None
        raise ValueError("metadata must be plain JSON (integers within 64 bits)") from None
    if holds_nul(value, encoded):
        raise ValueError("strings must not contain the NUL character (\\u0000)")
    size = len(encoded)
    if size > METADATA_MAX_BYTES:
        raise ValueError(
            f"metadata is {size} bytes as JSON; at most {METADATA_MAX_BYTES} bytes are allowed"
        )
    return value


Metadata = Annotated[dict[str, JsonValue], AfterValidator(_bounded_metadata)]
"""Free-form JSON object, at most ``METADATA_MAX_BYTES`` as compact JSON."""


def _no_nul_json(value: dict[str, JsonValue]) -> dict[str, JsonValue]:
    if holds_nul(value):
        raise ValueError("strings must not contain the NUL character (\\u0000)")
    return value


class _Contract(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=False)


class Media(_Contract):
    """A media attachment, referenced either by a platform media id or by a public URL."""

    kind: MediaKind
    id: NonEmptyStr | None = None
    url: NonEmptyStr | None = None
    caption: Text | None = None
    filename: Text | None = None

    @model_validator(mode="after")
    def _one_reference(self) -> Media:
        if (self.id is None) == (self.url is None):
            raise ValueError("media needs exactly one of 'id' (platform media id) or 'url'")
        return self


class Template(_Contract):
    """A pre-approved template (WhatsApp template name; for Twilio, the ContentSid).

    ``components`` are passed through in the WhatsApp Cloud API shape
    (``[{"type": "body", "parameters": [{"type": "text", "text": "..."}]}]``).
    """

    name: NonEmptyStr
    language: NonEmptyStr
    components: tuple[Annotated[dict[str, JsonValue], AfterValidator(_no_nul_json)], ...] = ()


class Button(_Contract):
    id: NonEmptyStr
    title: NonEmptyStr


class Interactive(_Contract):
    """A body text with reply choices (buttons, list rows, quick replies or an inline keyboard)."""

    body: NonEmptyStr
    buttons: Annotated[tuple[Button, ...], Field(min_length=1)]

    @model_validator(mode="after")
    def _unique_ids(self) -> Interactive:
        ids = [b.id for b in self.buttons]
        if len(set(ids)) != len(ids):
            raise ValueError("interactive button ids must be unique")
        return self


class Reaction(_Contract):
    """A reaction to an earlier message; an empty ``emoji`` removes our reaction."""

    message_id: NonEmptyStr
    emoji: Text


class Typing(_Contract):
    """Show a typing indicator to ``to``. WhatsApp (and WhatsApp via Twilio) needs the id of the
    customer's message being answered, which it also marks as read; elsewhere it is optional."""

    message_id: ReplyTo | None = None


class MarkRead(_Contract):
    """Mark the customer's message ``message_id`` as read (Messenger/Instagram mark the whole
    conversation seen: their API takes no message id)."""

    message_id: ReplyTo


class CallbackAnswer(_Contract):
    """Answer a Telegram button press (``answerCallbackQuery``): stops the button's spinner and
    optionally shows ``text`` (as an alert with ``show_alert``). ``callback_query_id`` is the
    ``data.message.id`` of the inbound ``reply`` event the press produced."""

    callback_query_id: ReplyTo
    text: Annotated[str, Field(max_length=200)] | None = None
    show_alert: bool = False


_SUB_OBJECTS: tuple[ContentKind, ...] = (
    "text",
    "media",
    "template",
    "interactive",
    "reaction",
    "typing",
    "mark_read",
    "callback_answer",
)


class Content(_Contract):
    kind: ContentKind
    text: NonEmptyStr | None = None
    media: Media | None = None
    template: Template | None = None
    interactive: Interactive | None = None
    reaction: Reaction | None = None
    typing: Typing | None = None
    mark_read: MarkRead | None = None
    callback_answer: CallbackAnswer | None = None

    @model_validator(mode="after")
    def _matching_sub_object(self) -> Content:
        if getattr(self, self.kind) is None:
            raise ValueError(f"content.kind is {self.kind!r} but content.{self.kind} is missing")
        extra = [k for k in _SUB_OBJECTS if k != self.kind and getattr(self, k) is not None]
        if extra:
            raise ValueError(
                f"content.kind is {self.kind!r}; remove content.{', content.'.join(extra)} "
                "(only the sub-object of the kind is allowed)"
            )
        return self


class SendCommand(_Contract):
    """``message.send``: the value on ``switchboard.outbound.commands.v1``.

    ``POST /v1/messages`` takes the same body without ``id`` (its Idempotency-Key plays that
    role). ``metadata`` is free-form (at most 16 KiB as compact JSON) and echoed in
    every lifecycle event; a few keys are read by senders as platform hints (documented in each
    platform module).
    """

    id: CommandId
    channel_id: NonEmptyStr
    to: Recipient
    content: Content
    reply_to: ReplyTo | None = None
    metadata: Metadata = Field(
        default_factory=dict,
        description=f"Free-form, at most {METADATA_MAX_BYTES} bytes as compact JSON; echoed in "
        "every lifecycle event",
    )
    not_after: datetime | None = None
    lane: Lane | None = Field(
        default=None,
        description="`reply` (granted first within the channel's rate) or `bulk`. Default: "
        "`reply` for a message inside an open customer-initiated conversation or marked "
        "`metadata.switchboard.automatic`, `bulk` for proactive messages (templates, or no "
        "customer message within the reply window)",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        """PostgreSQL text and jsonb cannot hold U+0000: refuse it here, anywhere in the
        command, rather than fail when the row is written."""
        if holds_nul(data):
            raise ValueError("strings must not contain the NUL character (\\u0000)")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> SendCommand:
        if self.not_after is not None and self.not_after.utcoffset() is None:
            raise ValueError("not_after must be an RFC 3339 instant with a UTC offset")
        if self.not_after is not None:
            try:
                self.not_after.astimezone(UTC)
            except OverflowError:
                raise ValueError("not_after is out of range") from None
        if self.content.kind == "reaction" and self.reply_to is not None:
            raise ValueError(
                "a reaction already targets content.reaction.message_id; drop reply_to"
            )
        if self.content.kind in SIGNAL_KINDS and self.reply_to is not None:
            raise ValueError(
                f"{self.content.kind} is not a message and quotes nothing: drop reply_to "
                f"(the customer's message goes in content.{self.content.kind}.message_id)"
            )
        return self


def signal_not_after(command: SendCommand, now: datetime, default: datetime) -> datetime:
    """The ``not_after`` to store: ``default`` for messages without one; for signals (typing,
    mark_read) at most ``SIGNAL_TTL_SECONDS`` from ``now``, whatever the command asked."""
    chosen = command.not_after or default
    if command.content.kind in SIGNAL_KINDS:
        return min(chosen, now + timedelta(seconds=SIGNAL_TTL_SECONDS))
    return chosen


class LifecycleError(_Contract):
    code: str
    title: str
    retryable: bool


class LifecycleEventData(_Contract):
    """``data`` of the lifecycle events on ``switchboard.outbound.events.v1``."""

    message_id: NonEmptyStr
    command_id: NonEmptyStr
    channel_id: NonEmptyStr
    platform: NonEmptyStr
    to: NonEmptyStr
    platform_message_id: str | None = None
    attempt: Annotated[int, Field(ge=0)]
    error: LifecycleError | None = None
    metadata: dict[str, JsonValue] = Field(default_factory=dict)
    content_kind: str | None = Field(
        default=None,
        description="The command's content.kind (text, template, typing, mark_read, …): lets a "
        "consumer tell a reply from a typing indicator or read mark",
    )


ChannelEventType = Literal["channel.suspended", "channel.resumed"]
CHANNEL_EVENT_TYPES: tuple[ChannelEventType, ...] = ("channel.suspended", "channel.resumed")


class ChannelError(_Contract):
    """The platform's refusal that suspended a channel (code and title, never a secret)."""

    code: str
    title: str | None = None
    http_status: int | None = None


class ChannelEventData(_Contract):
    """``data`` of ``channel.suspended`` / ``channel.resumed`` on
    ``switchboard.outbound.events.v1`` (key: the channel id)."""

    channel_id: NonEmptyStr
    platform: NonEmptyStr
    sending: Literal["active", "paused", "suspended"]
    reason: NonEmptyStr
    """``credentials_refused`` (suspended), ``credentials_updated`` or ``resumed`` (resumed)."""
    error: ChannelError | None = None
