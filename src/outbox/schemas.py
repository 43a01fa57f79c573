"""API schemas of the messages endpoints (distinct from the contracts and the ORM rows)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from infra.schema_types import Instant, UuidText
from outbox.contracts import (
    CHANNEL_EVENT_TYPES,
    LIFECYCLE_EVENT_TYPES,
    METADATA_MAX_BYTES,
    ChannelEventData,
    Content,
    Lane,
    LifecycleEventData,
    Metadata,
    Recipient,
    ReplyTo,
    SendCommand,
)
from outbox.models import OutboxAttempt, OutboxMessage

MessageState = Literal[
    "queued",
    "sending",
    "retrying",
    "sent",
    "delivered",
    "read",
    "failed",
    "dead",
    "cancelled",
]


class MessageCreate(BaseModel):
    """The send command without ``id``: the ``Idempotency-Key`` header plays that role."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    channel_id: UuidText
    to: Recipient = Field(description="wa_id/phone, PSID, IGSID, chat_id or E.164 number")
    content: Content
    reply_to: ReplyTo | None = None
    metadata: Metadata = Field(
        default_factory=dict,
        description=f"Free-form, at most {METADATA_MAX_BYTES} bytes as compact JSON; echoed in "
        "every lifecycle event",
    )
    not_after: Instant | None = Field(
        default=None, description="Not sent after this instant; default: acceptance + 24 h"
    )
    lane: Lane | None = Field(
        default=None,
        description="`reply` or `bulk` (see the send command); default from the "
        "conversation's state at acceptance",
    )


class ErrorInfo(BaseModel):
    code: str | None = None
    title: str | None = None
    retryable: bool | None = None


class MessageRead(BaseModel):
    id: uuid.UUID
    command_id: str = Field(description="The Idempotency-Key (API) or command id (Kafka)")
    source: Literal["api", "kafka"]
    channel_id: uuid.UUID
    platform: str
    to: str
    state: MessageState
    content: dict[str, Any]
    reply_to: str | None
    metadata: dict[str, Any]
    attempts: int = Field(description="Delivery attempts made so far")
    platform_message_id: str | None
    last_error: ErrorInfo | None
    next_attempt_at: datetime | None = Field(description="When queued/retrying: next attempt")
    not_after: datetime
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    finished_at: datetime | None
    lane: Lane = Field(description="`reply` or `bulk`: its share of the channel's rate")

    @classmethod
    def from_row(cls, row: OutboxMessage) -> MessageRead:
        return cls(
            id=row.id,
            command_id=row.command_id,
            source=row.source,
            channel_id=row.channel_id,
            platform=row.platform,
            to=row.recipient,
            state=row.state,
            content=row.content,
            reply_to=row.reply_to,
            metadata=row.message_metadata or {},
            attempts=row.attempts,
            platform_message_id=row.platform_message_id,
            last_error=ErrorInfo.model_validate(row.last_error) if row.last_error else None,
            next_attempt_at=row.next_attempt_at if row.state in ("queued", "retrying") else None,
            not_after=row.not_after,
            created_at=row.created_at,
            updated_at=row.updated_at,
            sent_at=row.sent_at,
            finished_at=row.finished_at,
            lane="reply" if row.lane == "reply" else "bulk",
        )


class AttemptRead(BaseModel):
    attempt: int
    worker: str
    started_at: datetime
    duration_ms: float
    outcome: str
    http_status: int | None
    error_code: str | None
    error_title: str | None
    retry_after: float | None
    response_excerpt: str | None

    @classmethod
    def from_row(cls, row: OutboxAttempt) -> AttemptRead:
        return cls(
            attempt=row.attempt,
            worker=row.worker,
            started_at=row.started_at,
            duration_ms=row.duration_ms,
            outcome=row.outcome,
            http_status=row.http_status,
            error_code=row.error_code,
            error_title=row.error_title,
            retry_after=row.retry_after,
            response_excerpt=row.response_excerpt,
        )


class MessageDetail(MessageRead):
    history: list[AttemptRead] = Field(description="Every delivery attempt, oldest first")


class MessagePage(BaseModel):
    items: list[MessageRead]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last")


# ---- JSON Schemas of the contracts (committed under openapi/schemas) --------------------------


def send_command_schema() -> dict[str, Any]:
    """The ``data`` of ``message.send`` (also accepted bare on the commands topic)."""
    schema = SendCommand.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def lifecycle_event_schema() -> dict[str, Any]:
    """The CloudEvents envelope on ``outbound.events.v1`` with ``LifecycleEventData``."""
    data = LifecycleEventData.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = data.pop("$defs", {})
    defs["LifecycleEventData"] = data
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "LifecycleEvent",
        "description": "Lifecycle event of an outbound message (CloudEvents 1.0, structured)",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "subject", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {
                "type": "string",
                "description": "Random per transition; a republished event keeps it",
            },
            "source": {"type": "string", "description": "/switchboard/outbox/<channel_id>"},
            "type": {"enum": list(LIFECYCLE_EVENT_TYPES)},
            "time": {"type": "string", "format": "date-time"},
            "subject": {"type": "string", "description": "channel_id:recipient"},
            "datacontenttype": {"const": "application/json"},
            "data": {"$ref": "#/$defs/LifecycleEventData"},
        },
        "$defs": defs,
    }


def channel_event_schema() -> dict[str, Any]:
    """The CloudEvents envelope of ``channel.suspended`` / ``channel.resumed`` on
    ``outbound.events.v1`` (key: the channel id)."""
    data = ChannelEventData.model_json_schema(ref_template="#/$defs/{model}")
    defs: dict[str, Any] = data.pop("$defs", {})
    defs["ChannelEventData"] = data
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ChannelEvent",
        "description": "A channel's sending was suspended (the platform refused its "
        "credentials) or resumed (new credentials, or POST /v1/channels/{id}/resume); "
        "CloudEvents 1.0, structured",
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "subject", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string"},
            "source": {"type": "string", "description": "/switchboard/outbox/<channel_id>"},
            "type": {"enum": list(CHANNEL_EVENT_TYPES)},
            "time": {"type": "string", "format": "date-time"},
            "subject": {"type": "string", "description": "channel_id"},
            "datacontenttype": {"const": "application/json"},
            "data": {"$ref": "#/$defs/ChannelEventData"},
        },
        "$defs": defs,
    }
