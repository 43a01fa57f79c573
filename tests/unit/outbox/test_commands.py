"""Command parsing: what the command consumer stores and what it dead-letters, and why."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from outbox.commands import parse_command
from outbox.contracts import SendCommand
from outbox.deadletter import DeadLetter


def command(**overrides: Any) -> SendCommand:
    body: dict[str, Any] = {
        "id": "c1",
        "channel_id": "ch",
        "to": "393331234567",
        "content": {"kind": "text", "text": "hi"},
        "metadata": {"b": 1, "a": {"y": 2, "x": 1}},
    }
    body.update(overrides)
    return SendCommand.model_validate(body)


def _json(value: object) -> bytes:
    return orjson.dumps(value)


@pytest.mark.parametrize(
    ("value", "reason", "fragment"),
    [
        (None, "invalid_command", "no value"),
        (b"\xff\xfe", "not_json", "not JSON"),
        (b"[1, 2]", "invalid_command", "not a JSON object"),
        (_json({"specversion": "1.0", "type": "x", "data": {}}), "invalid_command", "'x'"),
        (_json({"specversion": "1.0", "type": "message.send"}), "invalid_command", "data"),
        (_json({"id": "c", "channel_id": "ch", "to": "1"}), "invalid_command", "content"),
    ],
)
def test_poison_commands(value: bytes | None, reason: str, fragment: str) -> None:
    parsed = parse_command(value)
    assert isinstance(parsed, DeadLetter)
    assert parsed.reason == reason
    assert fragment in parsed.detail


def test_cloudevent_and_bare_commands_parse_alike() -> None:
    data = command().model_dump(mode="json")
    bare = parse_command(_json(data))
    wrapped = parse_command(_json({"specversion": "1.0", "type": "message.send", "data": data}))
    assert bare == wrapped == command()
