"""The generated documents committed under ``openapi/``: the HTTP spec, the JSON Schemas of every
Kafka value and the AsyncAPI description of the topics. A test fails on any drift."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from infra.component import Component
from infra.settings import Settings
from switchboard.app import VERSION, create_app

DEADLETTER_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "DeadLetter",
    "description": (
        "A record that could not be processed (CloudEvents type `switchboard.deadletter`), "
        "keyed like the original. The id derives from the original topic/partition/offset, so "
        "a redelivered poison record gets the same id."
    ),
    "type": "object",
    "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "data"],
    "properties": {
        "specversion": {"const": "1.0"},
        "id": {"type": "string"},
        "source": {"type": "string"},
        "type": {"const": "switchboard.deadletter"},
        "time": {"type": "string", "format": "date-time"},
        "subject": {"type": ["string", "null"], "description": "the original key"},
        "datacontenttype": {"const": "application/json"},
        "data": {
            "type": "object",
            "required": ["reason", "detail", "consumer", "original"],
            "properties": {
                "reason": {
                    "type": "string",
                    "description": "not_json | invalid_command | unknown_channel | conflict | …",
                },
                "detail": {"type": "string", "description": "never contains the value itself"},
                "consumer": {"type": "string"},
                "original": {
                    "type": "object",
                    "required": ["topic", "partition", "offset", "value_encoding", "value"],
                    "properties": {
                        "topic": {"type": "string"},
                        "partition": {"type": "integer"},
                        "offset": {"type": "integer"},
                        "timestamp": {"type": "string", "format": "date-time"},
                        "key": {"type": ["string", "null"]},
                        "value_encoding": {"enum": ["utf-8", "base64", None]},
                        "value": {"type": ["string", "null"]},
                        "value_truncated": {
                            "type": "boolean",
                            "description": "value holds only the first 256 KiB of the original",
                        },
                        "value_size": {
                            "type": ["integer", "null"],
                            "description": "size of the original value in bytes",
                        },
                    },
                },
            },
        },
    },
}

TOPICS: tuple[tuple[str, str, str, str], ...] = (
    ("inbound.v1", "inbound-event", "conversation_id", "Canonical inbound events (receive)."),
    (
        "outbound.commands.v1",
        "send-command",
        "channel_id:recipient",
        "Send commands (CloudEvents type message.send) consumed by the outbox.",
    ),
    (
        "outbound.events.v1",
        "lifecycle-event",
        "channel_id:recipient",
        "Lifecycle events of outbound messages (queued, sent, retrying, delivered, read, "
        "failed, dead, cancelled).",
    ),
    ("deadletter.v1", "deadletter", "the original key", "Records that could not be processed."),
    (
        "conversations.v1",
        "conversation-event",
        "conversation_id",
        "Conversation events: conversation.unanswered, conversation.answered, "
        "contact.opted_out, contact.opted_in.",
    ),
)


EXTRA_MESSAGES: dict[str, tuple[tuple[str, str], ...]] = {
    "outbound.events.v1": (
        (
            "channel-event",
            "channel.suspended / channel.resumed of a channel's sending (key: channel_id).",
        ),
    ),
}
"""Further message kinds of a topic (its first kind is in ``TOPICS``)."""


def _dump(document: Any) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


def asyncapi(settings: Settings) -> dict[str, Any]:
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for logical, schema, key, description in TOPICS:
        name = logical.replace(".", "_")
        channels[name] = {
            "address": settings.topic(logical),
            "description": f"{description} Key: `{key}`. The prefix is configurable.",
            "messages": {
                schema: {
                    "contentType": "application/cloudevents+json",
                    "payload": {"$ref": f"schemas/{schema}.schema.json"},
                }
            },
        }
        for extra, summary in EXTRA_MESSAGES.get(logical, ()):
            channels[name]["messages"][extra] = {
                "contentType": "application/cloudevents+json",
                "summary": summary,
                "payload": {"$ref": f"schemas/{extra}.schema.json"},
            }
        action = "receive" if logical == "outbound.commands.v1" else "send"
        operations[f"{action}_{name}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{name}"},
            "summary": (
                "Switchboard consumes this topic"
                if action == "receive"
                else "Switchboard publishes to this topic"
            ),
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Switchboard topics",
            "version": VERSION,
            "description": "Kafka topics of Switchboard. Values are CloudEvents 1.0, structured.",
        },
        "defaultContentType": "application/cloudevents+json",
        "channels": channels,
        "operations": operations,
    }


def render_all(settings: Settings, components: Sequence[Component]) -> dict[str, str]:
    app = create_app(settings, components)
    files = {
        "openapi.json": _dump(app.openapi()),
        "asyncapi.json": _dump(asyncapi(settings)),
        "schemas/deadletter.schema.json": _dump(DEADLETTER_SCHEMA),
    }
    for component in components:
        for name, schema in component.schemas.items():
            files[f"schemas/{name}.schema.json"] = _dump(schema)
    return files
