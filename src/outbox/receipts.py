"""Platform receipts and conversation windows, read from the canonical inbound events.

``message.status`` events are correlated to our messages by ``(channel_id,
platform_message_id)`` and move a message forward only: sent < delivered < read, and a
``failed`` receipt fails a sent or delivered message with the platform's error. A receipt that
would move a message backwards or sideways (``delivered`` after ``read``, anything after a
terminal state, a duplicate) changes nothing, so each of ``message.delivered``,
``message.read`` and ``message.failed`` is emitted at most once per message. A ``read`` that
overtakes its ``delivered`` moves the message straight to ``read`` (read implies delivered).

``message.received`` events (not echoes of our own messages) record the last inbound instant per
``channel_id:contact.id`` for WhatsApp's 24-hour window (``outbox.intake.window_key``).

Everything here runs in the caller's transaction; the consumer commits, then commits offsets.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from normalizer.models import MessageEvent, StatusEvent
from outbox import events
from outbox.contracts import LifecycleError, LifecycleEventType
from outbox.intake import window_key
from outbox.models import ConversationWindow, OutboxMessage
from switchboard.logging import get_logger
from switchboard.settings import Settings

__all__ = ["Transition", "apply_status", "record_windows", "window_updates"]

log = get_logger(__name__)

_FORWARD: dict[str, frozenset[str]] = {
    "delivered": frozenset({"sent"}),
    "read": frozenset({"sent", "delivered"}),
    "failed": frozenset({"sent", "delivered"}),
}
_EVENT: dict[str, LifecycleEventType] = {
    "delivered": "message.delivered",
    "read": "message.read",
    "failed": "message.failed",
}


@dataclass(frozen=True, slots=True)
class Transition:
    message_id: uuid.UUID
    before: str
    after: str


async def apply_status(
    session: AsyncSession, settings: Settings, event: StatusEvent, *, now: datetime | None = None
) -> Transition | None:
    """Move the matching message forward for one receipt; None when nothing changes."""
    status = event.data.status
    if status.message_id is None or status.state not in _FORWARD:
        return None
    try:
        channel_id = uuid.UUID(event.data.channel_id)
    except ValueError:
        return None
    message = await session.scalar(
        select(OutboxMessage)
        .where(
            OutboxMessage.channel_id == channel_id,
            OutboxMessage.platform_message_id == status.message_id,
        )
        .order_by(OutboxMessage.seq)
        .limit(1)
        .with_for_update()
    )
    if message is None:
        log.info(
            "outbox.receipt_unmatched",
            channel_id=str(channel_id),
            platform_message_id=status.message_id,
            state=status.state,
        )
        return None
    before = message.state
    if before not in _FORWARD[status.state]:
        return None
    message.state = status.state
    error: LifecycleError | None = None
    if status.state == "failed":
        code = status.error.code if status.error and status.error.code else "platform_failed"
        title = (
            status.error.title
            if status.error and status.error.title
            else "the platform reported the message as failed"
        )
        error = LifecycleError(code=code, title=title, retryable=False)
        message.last_error = {
            **error.model_dump(mode="json"),
            "detail": status.error.detail if status.error else None,
        }
        message.finished_at = now or datetime.now(UTC)
    events.emit(session, settings, message, _EVENT[status.state], error=error)
    log.info(
        "outbox.receipt_applied",
        message_id=str(message.id),
        before=before,
        after=message.state,
    )
    return Transition(message.id, before, message.state)


def window_updates(
    received: Iterable[MessageEvent], *, now: datetime | None = None
) -> dict[str, datetime]:
    """Latest inbound instant per window key among ``message.received`` events (echoes of our
    own messages excluded). A timestamp in the future (clock skew) counts as now."""
    now = now or datetime.now(UTC)
    latest: dict[str, datetime] = {}
    for event in received:
        data = event.data
        if event.type != "message.received" or data.message.echo or data.contact is None:
            continue
        when = now
        if event.time is not None:
            when = min(datetime.fromisoformat(event.time.replace("Z", "+00:00")), now)
        key = window_key(data.channel_id, data.platform, data.contact.id)
        if key not in latest or latest[key] < when:
            latest[key] = when
    return latest


async def record_windows(session: AsyncSession, latest: dict[str, datetime]) -> None:
    """Upsert the windows; an older instant never replaces a newer one."""
    if not latest:
        return
    stmt = pg_insert(ConversationWindow).values(
        [{"conversation_key": k, "last_inbound_at": v} for k, v in sorted(latest.items())]
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[ConversationWindow.conversation_key],
        set_={
            "last_inbound_at": func.greatest(
                ConversationWindow.last_inbound_at, stmt.excluded.last_inbound_at
            )
        },
    )
    await session.execute(stmt)
