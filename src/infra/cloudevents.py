"""The one CloudEvents 1.0 structured-mode envelope every service writes (docs/contracts.md §3,
§6, §7): outbox lifecycle and channel events, dead letters, conversation events and the send
commands conversations produce. The canonical inbound event is built by the normalizer, which
is below this package and models its envelope as pydantic fields (same attributes)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

__all__ = ["SPECVERSION", "encode", "envelope", "rfc3339"]

SPECVERSION = "1.0"


def rfc3339(at: datetime) -> str:
    """``at`` in UTC with a ``Z`` suffix (microseconds kept when present)."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def envelope(
    *,
    event_id: str,
    source: str,
    event_type: str,
    time: datetime,
    subject: str | None,
    data: Any,
) -> dict[str, Any]:
    """The envelope as a dict, attributes in the order every producer has always written them."""
    return {
        "specversion": SPECVERSION,
        "id": event_id,
        "source": source,
        "type": event_type,
        "time": rfc3339(time),
        "subject": subject,
        "datacontenttype": "application/json",
        "data": data,
    }


def encode(
    *,
    event_id: str,
    source: str,
    event_type: str,
    time: datetime,
    subject: str | None,
    data: Any,
) -> bytes:
    """The envelope as the JSON bytes of a Kafka record value."""
    return orjson.dumps(
        envelope(
            event_id=event_id,
            source=source,
            event_type=event_type,
            time=time,
            subject=subject,
            data=data,
        )
    )
