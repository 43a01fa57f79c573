"""The wire formats this package writes without importing the outbox: acknowledgement send
commands parse with the outbox's own contract, conversation events match their schema, and
their ids are stable per fact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
import pytest

from conversations import contracts
from outbox.contracts import SendCommand
from tests.unit.normalizer.jsonschema_lite import SchemaError, validate

AT = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


def test_acknowledgement_is_a_send_command_the_outbox_accepts() -> None:
    envelope = orjson.loads(
        contracts.send_command(
            command_id="conv-ack-1",
            channel_id="6f1c2d3e-0000-4000-8000-000000000001",
            to="393331234567",
            text="We are closed",
            conversation_id="whatsapp:1065:393331234567",
            reason="auto_reply",
            at=AT,
            not_after=AT + timedelta(hours=1),
        )
    )
    assert envelope["type"] == "message.send"
    command = SendCommand.model_validate(envelope["data"])
    assert command.id == envelope["id"] == "conv-ack-1"
    assert command.not_after == AT + timedelta(hours=1)
    assert contracts.is_automatic(command.metadata)


@pytest.mark.parametrize(
    "metadata",
    [{}, None, {"switchboard": True}, {"switchboard": {"automatic": "yes"}}, {"automatic": True}],
)
def test_only_the_documented_marker_is_automatic(metadata: object) -> None:
    assert not contracts.is_automatic(metadata)


def test_conversation_events_match_their_schema() -> None:
    schema = contracts.conversation_event_schema()
    event = orjson.loads(
        contracts.conversation_event(
            "conversation.answered",
            event_id=contracts.event_id("conversation.answered", "c", "1"),
            channel_id="ch",
            conversation_id="telegram:1:42",
            at=AT,
            data={
                "contact_id": "42",
                "episode": 1,
                "unanswered_since": contracts.rfc3339(AT),
                "answered_at": contracts.rfc3339(AT + timedelta(minutes=3)),
                "response_time_seconds": 180.0,
                "was_unanswered": True,
                "message_id": "m-1",
            },
        )
    )
    validate(event, schema)
    assert event["subject"] == event["data"]["conversation_id"] == "telegram:1:42"
    assert event["time"] == "2026-12-03T10:00:00Z"
    with pytest.raises(SchemaError):
        validate({**event, "type": "conversation.closed"}, schema)


def test_event_ids_are_stable_per_fact() -> None:
    first = contracts.event_id("conversation.unanswered", "telegram:1:42", "3")
    assert first == contracts.event_id("conversation.unanswered", "telegram:1:42", "3")
    assert first != contracts.event_id("conversation.unanswered", "telegram:1:42", "4")
