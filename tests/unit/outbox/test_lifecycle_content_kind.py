"""Lifecycle events name the command's content kind, so a consumer (the conversation layer)
can tell a reply from a typing indicator or read mark."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import orjson
import pytest

from outbox.contracts import LifecycleEventData
from outbox.events import build_event
from outbox.models import OutboxMessage


@pytest.mark.parametrize("kind", ["text", "template", "typing", "mark_read"])
def test_every_lifecycle_event_carries_the_content_kind(kind: str) -> None:
    message = OutboxMessage(
        id=uuid.uuid4(),
        command_id="cmd-1",
        channel_id=uuid.uuid4(),
        platform="whatsapp",
        recipient="15551234567",
        conversation_key="c:15551234567",
        content={"kind": kind},
        message_metadata={},
        attempts=1,
    )
    value = orjson.loads(build_event(message, "message.sent", now=datetime.now(UTC)))
    data = LifecycleEventData.model_validate(value["data"])
    assert data.content_kind == kind
