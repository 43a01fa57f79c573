"""Platform receipts and conversation windows, read from the canonical inbound events.

``message.status`` events are correlated to our messages by ``(channel_id,
platform_message_id)`` and move a message forward only: sent < delivered < read, and a
``failed`` receipt fails a sent or delivered message with the platform's error. A receipt that
would move a message backwards or sideways (``delivered`` after ``read``, anything after a
terminal state, a duplicate) changes nothing, so each of ``message.delivered``,
``message.read`` and ``message.failed`` is emitted at most once per message. A ``read`` that
overtakes its ``delivered`` moves the message straight to ``read`` (read implies delivered).

Early receipts: a platform may report ``sent``/``delivered`` before the worker has committed
the send's outcome (outcomes are written in batches). Such a receipt finds no message; it is
held in ``outbox_pending_receipts`` (only for an existing channel, one row per channel, id and
state) for ``outbox_pending_receipt_ttl`` seconds. ``settle_pending`` (run by every delivery
worker's maintenance loop, one at a time) applies held receipts whose message now has that
platform id, in arrival order and through the same forward-only rule, then purges expired ones:
a receipt for an id that never appears (another sender on the same number, a send whose outcome
was lost and that was sent again under a new id) is gone after the TTL.

Watermark receipts (Messenger/Instagram ``read``, and ``delivery`` without ``mids``) name no
message: they cover every message sent to that recipient at or before the watermark. Each such
message of the channel (``recipient`` = the receipt's ``recipient_id``, ``sent_at`` at or before
the watermark plus ``WATERMARK_SKEW``) moves forward by the same rule, oldest first, at most
``WATERMARK_BATCH`` per receipt. The skew allowance exists because ``sent_at`` is our clock
after the platform answered, while the watermark is the platform's time of the message, earlier
by the send's latency; without it the last message read would never be marked. A watermark
that arrives before the worker recorded a send does not cover it (watermark receipts are not
held: they carry no id to wait for).

WhatsApp statuses with ``pricing.billable`` are counted in
``switchboard_outbox_billable_messages_total{platform,category}`` (every billable status of the
channel's number, ours or not; at least once: a consumer restart may count a record again).

Telegram button presses (a ``message.received`` whose raw update is a ``callback_query``) are
answered automatically: ``answer_callbacks`` stages a ``callback_answer`` command (command id
``auto:answer:<event id>``, so a redelivered press is answered once) through the normal intake,
so the button stops spinning even when the consumer of the event never answers it.

``message.received`` events (not echoes of our own messages) record the last inbound instant per
``channel_id:contact.id`` for WhatsApp's 24-hour window (``outbox.service.window_key``).

A receipt whose ids cannot be stored (a platform message id or a window key longer than its
column, 300 characters, or holding U+0000, which PostgreSQL text cannot hold) cannot match any
message either: it is skipped and logged ``outbox.receipt_skipped``, as is a
``message.received`` whose ``time`` is not a real instant.

Everything here runs in the caller's transaction; the consumer commits, then commits offsets.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import orjson
from prometheus_client import Counter
from sqlalchemy import delete, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import Channel
from infra.logging import get_logger
from infra.settings import Settings
from normalizer.models import MessageEvent, StatusEvent
from outbox import events, service
from outbox.contracts import (
    LifecycleError,
    LifecycleEventType,
    SendCommand,
)
from outbox.errors import Rejected
from outbox.models import (
    CONVERSATION_KEY_MAX,
    PLATFORM_MESSAGE_ID_MAX,
    ConversationWindow,
    OutboxMessage,
    PendingReceipt,
)
from outbox.platforms import SENDERS
from outbox.service import window_key

__all__ = [
    "BILLABLE",
    "PLATFORM_ID_MAX",
    "WINDOW_KEY_MAX",
    "Transition",
    "answer_callbacks",
    "apply_status",
    "apply_watermark",
    "record_windows",
    "settle_pending",
    "storable",
    "window_updates",
]

log = get_logger(__name__)

PLATFORM_ID_MAX = PLATFORM_MESSAGE_ID_MAX
WINDOW_KEY_MAX = CONVERSATION_KEY_MAX


WATERMARK_SKEW: Final = timedelta(seconds=2)
WATERMARK_BATCH: Final = 1000

BILLABLE = Counter(
    "switchboard_outbox_billable_messages",
    "Billable messages reported by the platform's pricing facts, per category",
    ["platform", "category"],
)
#: WhatsApp pricing categories (PMP and CBP); anything else is counted as ``other`` so the
#: label set stays bounded.
PRICING_CATEGORIES: Final = frozenset(
    {
        "marketing",
        "marketing_lite",
        "utility",
        "authentication",
        "authentication_international",
        "service",
        "referral_conversion",
    }
)


def storable(value: str, limit: int) -> bool:
    """Whether ``value`` fits a ``varchar(limit)`` column (PostgreSQL text cannot hold NUL)."""
    return len(value) <= limit and "\x00" not in value


def _skipped(reason: str, **fields: object) -> None:
    log.warning("outbox.receipt_skipped", reason=reason, **fields)


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


_HOLD = text(
    """
    INSERT INTO outbox_pending_receipts (channel_id, platform_message_id, state, error, expires_at)
    SELECT c.id, :pmid, :state, CAST(:error AS jsonb),
        now() + CAST(:ttl AS float8) * interval '1 second'
    FROM channels c WHERE c.id = :channel_id
    ON CONFLICT (channel_id, platform_message_id, state) DO NOTHING
    RETURNING id
    """
)
_MATCHED = text(
    """
    SELECT p.id, p.channel_id, p.platform_message_id, p.state, p.error
    FROM outbox_pending_receipts p
    WHERE EXISTS (
        SELECT 1 FROM outbox_messages m
        WHERE m.channel_id = p.channel_id AND m.platform_message_id = p.platform_message_id)
    ORDER BY p.id
    LIMIT :n
    """
)
_PURGE = text("DELETE FROM outbox_pending_receipts WHERE expires_at < now() RETURNING id")
_SETTLE_LOCK = 0x5357_5052  # "SWPR": one settler of held receipts at a time


@dataclass(frozen=True, slots=True)
class Transition:
    message_id: uuid.UUID
    before: str
    after: str


async def apply_status(
    session: AsyncSession, settings: Settings, event: StatusEvent, *, now: datetime | None = None
) -> Transition | None:
    """Move the matching message forward for one receipt; None when nothing changes. A receipt
    whose message is not found (its platform id is not recorded yet) is held in
    ``outbox_pending_receipts`` for ``outbox_pending_receipt_ttl`` seconds."""
    status = event.data.status
    _count_billable(event)
    if status.message_id is None and status.watermark is not None:
        moved = await apply_watermark(session, settings, event, now=now)
        return moved[-1] if moved else None
    if status.message_id is None or status.state not in _FORWARD:
        return None
    try:
        channel_id = uuid.UUID(event.data.channel_id)
    except ValueError:
        return None
    if not storable(status.message_id, PLATFORM_ID_MAX):
        _skipped(  # no message can carry it: holding it would fail the transaction
            "unstorable_platform_message_id",
            event_id=event.id,
            channel_id=str(channel_id),
            length=len(status.message_id),
        )
        return None
    error = None
    if status.error is not None:  # jsonb cannot hold NUL either: dropped from the texts
        error = {
            k: v.replace("\x00", "") if isinstance(v, str) else v
            for k, v in status.error.model_dump(mode="json").items()
        }
    message = await _locked_message(session, channel_id, status.message_id)
    if message is None:
        held = await session.scalar(
            _HOLD,
            {
                "channel_id": channel_id,
                "pmid": status.message_id,
                "state": status.state,
                "error": orjson.dumps(error).decode() if error is not None else None,
                "ttl": settings.outbox_pending_receipt_ttl,
            },
        )
        log.info(
            "outbox.receipt_held" if held is not None else "outbox.receipt_unmatched",
            channel_id=str(channel_id),
            platform_message_id=status.message_id,
            state=status.state,
        )
        return None
    return _advance(session, settings, message, status.state, error, now)


def _count_billable(event: StatusEvent) -> None:
    pricing = event.data.status.pricing
    if pricing is None or pricing.billable is not True:
        return
    category = pricing.category if pricing.category in PRICING_CATEGORIES else "other"
    BILLABLE.labels(event.data.platform, category).inc()


async def apply_watermark(
    session: AsyncSession, settings: Settings, event: StatusEvent, *, now: datetime | None = None
) -> list[Transition]:
    """A receipt without a message id covering every message sent to ``recipient_id`` at or
    before ``watermark``: each one that can move forward does, oldest first."""
    status = event.data.status
    if status.state not in ("delivered", "read") or not status.recipient_id:
        return []
    if status.watermark is None or not storable(status.recipient_id, PLATFORM_ID_MAX):
        return []
    try:
        channel_id = uuid.UUID(event.data.channel_id)
        watermark = datetime.fromisoformat(status.watermark.replace("Z", "+00:00"))
    except ValueError:
        return []
    rows = await session.scalars(
        select(OutboxMessage)
        .where(
            OutboxMessage.channel_id == channel_id,
            OutboxMessage.recipient == status.recipient_id,
            OutboxMessage.state.in_(_FORWARD[status.state]),
            OutboxMessage.sent_at <= watermark + WATERMARK_SKEW,
        )
        .order_by(OutboxMessage.seq)
        .limit(WATERMARK_BATCH)
        .with_for_update()
    )
    moved = [
        t
        for message in rows.all()
        if (t := _advance(session, settings, message, status.state, None, now)) is not None
    ]
    if moved:
        log.info(
            "outbox.watermark_applied",
            channel_id=str(channel_id),
            state=status.state,
            messages=len(moved),
        )
    return moved


async def settle_pending(
    session: AsyncSession, settings: Settings, *, limit: int, now: datetime | None = None
) -> tuple[int, int]:
    """Apply held receipts whose message now carries their platform id, oldest first (the
    order they arrived in, so a held ``read`` before a held ``delivered`` ends in ``read`` with
    only ``message.read``, as if both had arrived after the send), then drop expired ones.
    Returns (applied, expired). One settler at a time across replicas (advisory lock)."""
    locked = await session.scalar(
        text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _SETTLE_LOCK}
    )
    if not locked:
        return 0, 0
    rows = (await session.execute(_MATCHED, {"n": limit})).all()
    applied = 0
    for _pid, channel_id, pmid, state, error in rows:
        message = await _locked_message(session, channel_id, pmid)
        if message is not None and _advance(session, settings, message, state, error, now):
            applied += 1
    if rows:
        await session.execute(
            delete(PendingReceipt).where(PendingReceipt.id.in_([r[0] for r in rows]))
        )
    expired = len((await session.scalars(_PURGE)).all())
    if rows or expired:
        log.info("outbox.pending_receipts_settled", matched=len(rows), applied=applied,
                 expired=expired)  # fmt: skip
    return applied, expired


async def _locked_message(
    session: AsyncSession, channel_id: uuid.UUID, platform_message_id: str
) -> OutboxMessage | None:
    return await session.scalar(
        select(OutboxMessage)
        .where(
            OutboxMessage.channel_id == channel_id,
            OutboxMessage.platform_message_id == platform_message_id,
        )
        .order_by(OutboxMessage.seq)
        .limit(1)
        .with_for_update()
    )


def _advance(
    session: AsyncSession,
    settings: Settings,
    message: OutboxMessage,
    state: str,
    receipt_error: dict[str, Any] | None,
    now: datetime | None,
) -> Transition | None:
    """The forward-only rule, shared by live and held receipts."""
    before = message.state
    if state not in _FORWARD or before not in _FORWARD[state]:
        return None
    message.state = state
    error: LifecycleError | None = None
    if state == "failed":
        receipt_error = receipt_error or {}
        error = LifecycleError(
            code=receipt_error.get("code") or "platform_failed",
            title=receipt_error.get("title") or "the platform reported the message as failed",
            retryable=False,
        )
        message.last_error = {
            **error.model_dump(mode="json"),
            "detail": receipt_error.get("detail"),
        }
        message.finished_at = now or datetime.now(UTC)
    events.emit(session, settings, message, _EVENT[state], error=error)
    log.info(
        "outbox.receipt_applied",
        message_id=str(message.id),
        before=before,
        after=message.state,
    )
    return Transition(message.id, before, message.state)


def callback_answers(received: Iterable[MessageEvent]) -> list[SendCommand]:
    """The commands the platforms require in answer to ``received`` (Telegram button presses:
    ``Sender.automatic_answer``)."""
    commands = []
    for event in received:
        sender = SENDERS.get(event.data.platform)
        command = None if sender is None else sender.automatic_answer(event)
        if command is not None:
            commands.append(command)
    return commands


async def answer_callbacks(
    session: AsyncSession, settings: Settings, received: Iterable[MessageEvent]
) -> int:
    """Stage the automatic answers to Telegram button presses; returns how many were new."""
    staged = 0
    for command in callback_answers(received):
        try:
            channel = await session.get(Channel, uuid.UUID(command.channel_id))
        except ValueError:
            channel = None
        if channel is not None and not channel.auto_answer_callbacks:
            continue  # the application answers them itself (per-channel switch)
        try:
            accepted = await service.accept(session, settings, command, source="kafka")
        except Rejected as exc:  # the channel is gone: nothing to answer with
            _skipped("callback_answer_refused", code=exc.code, channel_id=command.channel_id)
            continue
        staged += 0 if accepted.replayed else 1
    return staged


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
            try:
                when = min(datetime.fromisoformat(event.time.replace("Z", "+00:00")), now)
            except ValueError:  # matches the pattern, is no instant (month 13, …)
                _skipped("invalid_time", event_id=event.id)
                continue
        key = window_key(data.channel_id, data.platform, data.contact.id)
        if not storable(key, WINDOW_KEY_MAX):
            _skipped("unstorable_window_key", event_id=event.id, length=len(key))
            continue
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
