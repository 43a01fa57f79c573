"""Wire formats this package writes: events on ``switchboard.conversations.v1`` and the send
commands of automatic acknowledgements (written per docs/contracts.md §6; the outbox is not
imported).

Conversation events are CloudEvents 1.0 (structured), key and ``subject`` the conversation id.
Their ``id`` is derived from what they report (uuid5), so a republished or re-decided event
keeps its id: ``conversation.unanswered`` of episode 3 of a conversation always has the same
id, whichever replica decided it, however often it is relayed.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from infra import cloudevents

CONVERSATIONS_TOPIC = "conversations.v1"
COMMANDS_TOPIC = "outbound.commands.v1"
ConversationEventType = Literal[
    "conversation.unanswered", "conversation.answered", "contact.opted_out", "contact.opted_in"
]
EVENT_TYPES: tuple[ConversationEventType, ...] = (
    "conversation.unanswered",
    "conversation.answered",
    "contact.opted_out",
    "contact.opted_in",
)
_NAMESPACE = uuid.UUID("6f3c1d2e-5b7a-4c1e-9a0b-2f64c0de1a13")
AUTOMATIC_METADATA_KEY = "switchboard"
"""Send commands whose ``metadata.switchboard.automatic`` is ``true`` are automatic: they never
count as a reply (auto-acknowledgements carry it; any client may set it on its bots' sends)."""


rfc3339 = cloudevents.rfc3339


def event_id(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "\n".join(parts)))


def conversation_event(
    event_type: ConversationEventType,
    *,
    event_id: str,
    channel_id: str,
    conversation_id: str,
    at: datetime,
    data: dict[str, Any],
) -> bytes:
    return cloudevents.encode(
        event_id=event_id,
        source=f"/switchboard/conversations/{channel_id}",
        event_type=event_type,
        time=at,
        subject=conversation_id,
        data={"channel_id": channel_id, "conversation_id": conversation_id, **data},
    )


def send_command(
    *,
    command_id: str,
    channel_id: str,
    to: str,
    text: str,
    conversation_id: str,
    reason: str,
    at: datetime,
    not_after: datetime | None = None,
) -> bytes:
    """A ``message.send`` CloudEvent whose ``data`` is the send command (docs/contracts.md §6)."""
    command: dict[str, Any] = {
        "id": command_id,
        "channel_id": channel_id,
        "to": to,
        "content": {"kind": "text", "text": text},
        "metadata": {
            AUTOMATIC_METADATA_KEY: {
                "automatic": True,
                "reason": reason,
                "conversation_id": conversation_id,
            }
        },
    }
    if not_after is not None:
        command["not_after"] = rfc3339(not_after)
    return cloudevents.encode(
        event_id=command_id,
        source=f"/switchboard/conversations/{channel_id}",
        event_type="message.send",
        time=at,
        subject=conversation_id,
        data=command,
    )


def is_automatic(metadata: Any) -> bool:
    if not isinstance(metadata, dict):
        return False
    marker = metadata.get(AUTOMATIC_METADATA_KEY)
    return isinstance(marker, dict) and marker.get("automatic") is True


def conversation_event_schema() -> dict[str, Any]:
    nullable_time = {"type": ["string", "null"], "format": "date-time"}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ConversationEvent",
        "description": (
            "An event of the conversation layer on `switchboard.conversations.v1` (key: the "
            "conversation id). The id is derived from the fact reported (e.g. conversation and "
            "episode), so consumers dedup on it."
        ),
        "type": "object",
        "required": ["specversion", "id", "source", "type", "time", "subject", "data"],
        "properties": {
            "specversion": {"const": "1.0"},
            "id": {"type": "string"},
            "source": {"type": "string", "description": "/switchboard/conversations/<channel>"},
            "type": {"enum": list(EVENT_TYPES)},
            "time": {"type": "string", "format": "date-time"},
            "subject": {"type": "string", "description": "the conversation id"},
            "datacontenttype": {"const": "application/json"},
            "data": {
                "type": "object",
                "required": ["channel_id", "conversation_id"],
                "properties": {
                    "channel_id": {"type": "string"},
                    "conversation_id": {"type": "string"},
                    "contact_id": {
                        "type": ["string", "null"],
                        "description": "the contact key (recipient) of the channel",
                    },
                    "episode": {
                        "type": "integer",
                        "description": "conversation.*: the episode (customer message waiting "
                        "for a reply) it concerns, counted from 1",
                    },
                    "unanswered_since": {
                        **nullable_time,
                        "description": "conversation.*: when the episode's first customer "
                        "message was recorded",
                    },
                    "unanswered_after_seconds": {
                        "type": "number",
                        "description": "conversation.unanswered: the channel's threshold",
                    },
                    "answered_at": {**nullable_time, "description": "conversation.answered"},
                    "response_time_seconds": {
                        "type": "number",
                        "description": "conversation.answered: answered_at - unanswered_since",
                    },
                    "was_unanswered": {
                        "type": "boolean",
                        "description": "conversation.answered: conversation.unanswered was "
                        "emitted for this episode",
                    },
                    "message_id": {
                        "type": ["string", "null"],
                        "description": "conversation.answered: the outbox message id of the reply",
                    },
                    "source": {
                        "enum": ["keyword", "platform", "api"],
                        "description": "contact.*: what opted the contact out or in",
                    },
                    "reason": {
                        "type": ["string", "null"],
                        "description": "contact.*: the keyword, or the platform signal",
                    },
                },
            },
        },
    }
