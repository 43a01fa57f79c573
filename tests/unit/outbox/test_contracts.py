"""The send-command contract: what is accepted, and the messages for what is not."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from outbox.contracts import METADATA_MAX_BYTES, LifecycleEventData, SendCommand
from outbox.schemas import MessageCreate


def command(content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "cmd-1", "channel_id": "ch-1", "to": "+15550001", "content": content, **extra}


VALID_CONTENT: list[dict[str, Any]] = [
    {"kind": "text", "text": "hello"},
    {"kind": "media", "media": {"kind": "image", "url": "https://x.test/a.png", "caption": "c"}},
    {"kind": "media", "media": {"kind": "document", "id": "MEDIA1", "filename": "a.pdf"}},
    {"kind": "template", "template": {"name": "t", "language": "en_US", "components": []}},
    {"kind": "interactive", "interactive": {"body": "b", "buttons": [{"id": "1", "title": "A"}]}},
    {"kind": "reaction", "reaction": {"message_id": "wamid.1", "emoji": ""}},
]


@pytest.mark.parametrize("content", VALID_CONTENT, ids=lambda c: c["kind"])
def test_each_kind_with_its_sub_object_is_accepted(content: dict[str, Any]) -> None:
    parsed = SendCommand.model_validate(command(content))
    assert parsed.content.kind == content["kind"]
    assert getattr(parsed.content, content["kind"]) is not None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"kind": "text"}, "content.kind is 'text' but content.text is missing"),
        ({"kind": "media", "text": "x"}, "content.media is missing"),
        (
            {"kind": "text", "text": "x", "media": {"kind": "image", "url": "https://x"}},
            "remove content.media",
        ),
        ({"kind": "media", "media": {"kind": "image"}}, "exactly one of 'id'"),
        ({"kind": "media", "media": {"kind": "image", "id": "1", "url": "u"}}, "exactly one of"),
        ({"kind": "media", "media": {"kind": "gif", "url": "u"}}, "'image'"),
        ({"kind": "interactive", "interactive": {"body": "b", "buttons": []}}, "at least 1"),
        (
            {
                "kind": "interactive",
                "interactive": {"body": "b", "buttons": [{"id": "1", "title": "A"}] * 2},
            },
            "button ids must be unique",
        ),
        ({"kind": "text", "text": "x", "captoin": "y"}, "Extra inputs are not permitted"),
        ({"kind": "sms", "text": "x"}, "'text', 'media', 'template'"),
    ],
)
def test_invalid_content_is_refused_with_a_clear_message(
    content: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message):
        SendCommand.model_validate(command(content))


def test_not_after_must_carry_an_offset() -> None:
    text = {"kind": "text", "text": "x"}
    with pytest.raises(ValidationError, match="UTC offset"):
        SendCommand.model_validate(command(text, not_after="2030-01-01T00:00:00"))
    ok = SendCommand.model_validate(command(text, not_after="2030-01-01T00:00:00Z"))
    assert ok.not_after == datetime(2030, 1, 1, tzinfo=UTC)


def test_a_reaction_cannot_also_reply() -> None:
    reaction = {"kind": "reaction", "reaction": {"message_id": "m", "emoji": "👍"}}
    with pytest.raises(ValidationError, match="drop reply_to"):
        SendCommand.model_validate(command(reaction, reply_to="m"))


def test_commands_are_frozen_and_round_trip_as_json() -> None:
    parsed = SendCommand.model_validate(
        command({"kind": "text", "text": "hi"}, metadata={"order": 42, "tags": ["a"]})
    )
    with pytest.raises(ValidationError, match="frozen"):
        parsed.to = "other"  # type: ignore[misc]
    assert SendCommand.model_validate_json(parsed.model_dump_json()) == parsed


@pytest.mark.parametrize(("field", "limit"), [("id", 200), ("to", 200), ("reply_to", 300)])
def test_fields_stored_in_bounded_columns_are_bounded(field: str, limit: int) -> None:
    """As long as the ``outbox_messages`` columns: longer would fail the INSERT instead."""
    text = {"kind": "text", "text": "x"}
    assert getattr(SendCommand.model_validate(command(text, **{field: "9" * limit})), field)
    with pytest.raises(ValidationError, match=f"at most {limit} characters"):
        SendCommand.model_validate(command(text, **{field: "9" * (limit + 1)}))
    if field != "id":  # the API takes the id from the Idempotency-Key header (max 200)
        api_body = {k: v for k, v in command(text).items() if k != "id"}
        with pytest.raises(ValidationError, match=f"at most {limit} characters"):
            MessageCreate.model_validate({**api_body, field: "9" * (limit + 1)})


def test_metadata_is_bounded_as_compact_json() -> None:
    """Echoed in every lifecycle event: unbounded, it would make the events unpublishable."""
    text = {"kind": "text", "text": "x"}
    overhead = len(orjson.dumps({"blob": ""}))
    at_limit = {"blob": "a" * (METADATA_MAX_BYTES - overhead)}
    assert len(orjson.dumps(at_limit)) == METADATA_MAX_BYTES
    assert SendCommand.model_validate(command(text, metadata=at_limit)).metadata == at_limit
    over = {"blob": "a" * (METADATA_MAX_BYTES - overhead + 1)}
    api_body = {k: v for k, v in command(text).items() if k != "id"}
    for model, body in ((SendCommand, command(text)), (MessageCreate, api_body)):
        with pytest.raises(ValidationError, match=f"at most {METADATA_MAX_BYTES} bytes"):
            model.model_validate({**body, "metadata": over})
        with pytest.raises(ValidationError, match="at most"):
            model.model_validate({**body, "metadata": {"blob": "a" * 1_100_000}})
        with pytest.raises(ValidationError, match="plain JSON"):  # orjson cannot write it
            model.model_validate({**body, "metadata": {"n": 10**30}})


def test_lifecycle_event_data_shape() -> None:
    data = LifecycleEventData.model_validate(
        {
            "message_id": "msg-1",
            "command_id": "cmd-1",
            "channel_id": "ch-1",
            "platform": "whatsapp",
            "to": "+15550001",
            "platform_message_id": None,
            "attempt": 2,
            "error": {"code": "131047", "title": "Re-engagement message", "retryable": False},
            "metadata": {"k": "v"},
        }
    )
    assert data.error is not None
    assert data.error.retryable is False
    design_fields = {
        "message_id",
        "command_id",
        "channel_id",
        "platform",
        "to",
        "platform_message_id",
        "attempt",
        "error",
        "metadata",
    }
    # design §6 fields, plus content_kind: an additive field documented in docs/contracts.md
    assert set(data.model_dump()) == design_fields | {"content_kind"}
    assert data.content_kind is None
    with pytest.raises(ValidationError):
        LifecycleEventData.model_validate({**data.model_dump(), "attempt": -1})
