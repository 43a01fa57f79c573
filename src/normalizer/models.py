"""Canonical inbound event contract (docs/contracts.md §4): frozen pydantic models.

The envelope is a CloudEvents 1.0 structured-mode event. ``InboundEvent`` is the common base
class; the concrete classes narrow ``type`` and ``data`` so that the union of them is one
discriminated union (on ``type``) with one ``TypeAdapter`` (``EVENT_ADAPTER``).

Every key of the contract is always present in the JSON form; absent facts are ``null``.
Additions to §4, all documented here and in the package docstring:

* ``data.message.forwarded`` (bool): the platform marked the message as forwarded.
* ``data.message.echo`` (bool): the message was sent *by the business* (Messenger/Instagram
  ``is_echo``, WhatsApp ``smb_message_echoes``); the contact is then the recipient.
* ``data.status.watermark`` (RFC 3339 or null): Messenger/Instagram receipts that cover every
  message sent at or before this instant rather than one message id.
* ``data.message.attachments`` (list): every media item of the message, in platform order
  (Twilio MMS and Messenger carry several); the first is also ``data.message.media``. Empty
  when the message has no media.
* ``data.status.pricing`` (object or null): WhatsApp's pricing facts for the message
  (``category``, ``billable``, ``model``), on the one status (delivered or read) that has them.
* ``data.conversation`` (object or null, ``conversation.updated`` only): ``blocked`` (can the
  business still write to this conversation: Telegram ``my_chat_member``) and ``referral``
  (Messenger/Instagram ``referral`` events: the user opened the conversation from a link or ad).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter

from .platforms import Platform

__all__ = [
    "EVENTS_ADAPTER",
    "EVENT_ADAPTER",
    "AnyInboundEvent",
    "Contact",
    "ConversationData",
    "ConversationEvent",
    "ConversationUpdate",
    "EventData",
    "EventType",
    "InboundEvent",
    "Location",
    "Media",
    "Message",
    "MessageData",
    "MessageEvent",
    "MessageKind",
    "Platform",
    "Pricing",
    "Reaction",
    "Referral",
    "Reply",
    "Status",
    "StatusData",
    "StatusError",
    "StatusEvent",
    "StatusState",
    "UnsupportedData",
    "UnsupportedEvent",
]

EventType = Literal[
    "message.received",
    "message.status",
    "message.edited",
    "message.deleted",
    "conversation.updated",
    "unsupported",
]
MessageKind = Literal[
    "text",
    "image",
    "video",
    "audio",
    "voice",
    "document",
    "sticker",
    "location",
    "contacts",
    "reply",
    "reaction",
    "order",
    "unsupported",
]
StatusState = Literal["sent", "delivered", "read", "failed", "deleted"]

RFC3339_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?Z$"
Timestamp = Annotated[
    str,
    StringConstraints(pattern=RFC3339_PATTERN),
    Field(json_schema_extra={"format": "date-time"}),
]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True,
        extra="ignore",
        ser_json_inf_nan="null",
        json_schema_serialization_defaults_required=True,
    )


class Contact(_Model):
    """The person (or chat) on the platform side of the conversation."""

    id: str
    name: str | None = None
    phone: str | None = Field(default=None, description="E.164 with '+', when the platform says")
    username: str | None = None


class Media(_Model):
    """One media item. ``GET /v1/channels/{channel_id}/media/{id}`` streams its bytes when ``id``
    is set: WhatsApp media id, Telegram ``file_id``, Twilio ``<MessageSid>:<MediaSid>``,
    Messenger/Instagram ``u.<base64url of url>`` (docs/media.md)."""

    id: str | None = Field(
        default=None,
        description="Platform media id / file_id: GET /v1/channels/{channel_id}/media/{id} "
        "fetches the bytes",
    )
    mime_type: str | None = None
    sha256: str | None = None
    filename: str | None = None
    url: str | None = None


class Location(_Model):
    latitude: float
    longitude: float
    name: str | None = None
    address: str | None = None


class Reply(_Model):
    """A button / list / postback / quick-reply / callback payload chosen by the user."""

    id: str | None = Field(description="The developer-defined payload or row id")
    title: str | None = Field(default=None, description="The visible title, when known")


class Reaction(_Model):
    message_id: str | None = Field(description="Platform id of the message reacted to")
    emoji: str = Field(description="Empty string when the reaction was removed")


class Message(_Model):
    id: str | None = Field(description="Platform message id (null when the platform gives none)")
    kind: MessageKind | None = Field(description="null only for message.deleted")
    text: str | None = Field(default=None, description="Body or caption")
    media: Media | None = None
    location: Location | None = None
    reply: Reply | None = None
    reaction: Reaction | None = None
    reply_to: str | None = Field(default=None, description="Id of the quoted message")
    attachments: list[Media] = Field(
        default_factory=list, description="Every media item; the first is also `media`"
    )
    forwarded: bool = False
    echo: bool = Field(default=False, description="Sent by the business, not the contact")


class StatusError(_Model):
    code: str | None = Field(description="Platform error code, as a string")
    title: str | None = None
    detail: str | None = None


class Pricing(_Model):
    """WhatsApp ``statuses[].pricing``: what the message costs the business."""

    category: str | None = Field(
        default=None, description="marketing, utility, authentication, service, …"
    )
    billable: bool | None = None
    model: str | None = Field(default=None, description="Pricing model: PMP, CBP")


class Status(_Model):
    message_id: str | None = Field(description="Platform id of our outbound message")
    state: StatusState
    recipient_id: str | None = None
    error: StatusError | None = None
    watermark: Timestamp | None = Field(
        default=None, description="Receipt covers every message sent at or before this instant"
    )
    pricing: Pricing | None = None


class Referral(_Model):
    ref: str | None = None
    source: str | None = None
    type: str | None = None


class ConversationUpdate(_Model):
    blocked: bool | None = Field(
        default=None,
        description="true: the business can no longer write here (bot blocked/removed); "
        "false: it can again; null: not about blocking",
    )
    referral: Referral | None = None


class EventData(_Model):
    platform: Platform
    channel_id: str
    account_id: str | None = Field(description="Platform-side business account id")
    conversation_id: str = Field(description="<platform>:<account_id>:<chat or contact id>")
    contact: Contact | None = None
    message: Message | None = None
    status: Status | None = None
    conversation: ConversationUpdate | None = None
    raw: Any = Field(default=None, description="The platform's own object for this event")


class MessageData(EventData):
    message: Message
    status: None = None
    conversation: None = None


class StatusData(EventData):
    message: None = None
    status: Status
    conversation: None = None


class ConversationData(EventData):
    message: None = None
    status: None = None
    conversation: ConversationUpdate


class UnsupportedData(EventData):
    message: None = None
    status: None = None
    conversation: None = None


class InboundEvent(_Model):
    """CloudEvents 1.0 structured envelope. Instances are always one of the subclasses."""

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(description="Deterministic uuid5 over platform, channel and dedup key")
    source: str = Field(description="/switchboard/<platform>/<channel_id>")
    type: EventType
    time: Timestamp | None = Field(description="The platform's timestamp (UTC), else receipt time")
    subject: str = Field(description="The conversation_id")
    datacontenttype: Literal["application/json"] = "application/json"
    data: EventData


class MessageEvent(InboundEvent):
    type: Literal["message.received", "message.edited", "message.deleted"]
    data: MessageData


class StatusEvent(InboundEvent):
    type: Literal["message.status"]
    data: StatusData


class ConversationEvent(InboundEvent):
    type: Literal["conversation.updated"]
    data: ConversationData


class UnsupportedEvent(InboundEvent):
    type: Literal["unsupported"]
    data: UnsupportedData


AnyInboundEvent = Annotated[
    MessageEvent | StatusEvent | ConversationEvent | UnsupportedEvent,
    Field(discriminator="type"),
]

EVENT_ADAPTER: TypeAdapter[MessageEvent | StatusEvent | ConversationEvent | UnsupportedEvent] = (
    TypeAdapter(AnyInboundEvent)
)
EVENTS_ADAPTER: TypeAdapter[
    list[MessageEvent | StatusEvent | ConversationEvent | UnsupportedEvent]
] = TypeAdapter(list[AnyInboundEvent])
