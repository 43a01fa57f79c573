"""The one CloudEvents envelope builder (infra.cloudevents)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson

from infra import cloudevents


def test_envelope_attributes_in_the_order_producers_write_them() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 600_000, tzinfo=UTC)
    value = cloudevents.encode(
        event_id="e-1",
        source="/switchboard/outbox/c-1",
        event_type="message.sent",
        time=at,
        subject="whatsapp:1:2",
        data={"a": 1},
    )
    assert value == (
        b'{"specversion":"1.0","id":"e-1","source":"/switchboard/outbox/c-1",'
        b'"type":"message.sent","time":"2026-01-02T03:04:05.600000Z",'
        b'"subject":"whatsapp:1:2","datacontenttype":"application/json","data":{"a":1}}'
    )
    assert orjson.loads(value) == cloudevents.envelope(
        event_id="e-1",
        source="/switchboard/outbox/c-1",
        event_type="message.sent",
        time=at,
        subject="whatsapp:1:2",
        data={"a": 1},
    )


def test_time_is_written_in_utc_with_z() -> None:
    at = datetime(2026, 1, 2, 5, 0, tzinfo=timezone(timedelta(hours=2)))
    assert cloudevents.rfc3339(at) == "2026-01-02T03:00:00Z"


def test_subject_may_be_null() -> None:
    env = cloudevents.envelope(
        event_id="x", source="/s", event_type="t", time=datetime.now(UTC), subject=None, data=None
    )
    assert env["subject"] is None
    assert env["specversion"] == "1.0"
