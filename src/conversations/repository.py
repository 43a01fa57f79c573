"""Queries of the conversations API, with opaque keyset cursors."""

from __future__ import annotations

import base64
import uuid
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from conversations.errors import InvalidCursor
from conversations.models import Conversation, OptOut, TimelineEntry
from conversations.schemas import ConversationState

_CURSOR_MAX = 1200


def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(list(parts))).decode().rstrip("=")


def decode_cursor(cursor: str, arity: int) -> list[Any]:
    try:
        if len(cursor) > _CURSOR_MAX:
            raise ValueError
        parts = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(parts, list) or len(parts) != arity:
            raise ValueError
        if any(isinstance(p, str) and "\x00" in p for p in parts):
            raise ValueError
        return parts
    except ValueError:
        raise InvalidCursor("invalid cursor: pass the next_cursor of a previous page") from None


def _instant(value: Any) -> datetime:
    if not isinstance(value, str):
        raise InvalidCursor("invalid cursor: pass the next_cursor of a previous page")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidCursor("invalid cursor: pass the next_cursor of a previous page") from None
    if parsed.tzinfo is None:
        raise InvalidCursor("invalid cursor: pass the next_cursor of a previous page")
    return parsed


def state_of(conversation: Conversation) -> ConversationState:
    if conversation.unanswered_since is None:
        return "answered"
    return "unanswered" if conversation.unanswered_notified else "open"


def opted_out_clause() -> Any:
    return exists().where(
        OptOut.channel_id == Conversation.channel_id,
        OptOut.contact_key == Conversation.contact_key,
    )


async def list_conversations(
    session: AsyncSession,
    *,
    channel_id: uuid.UUID | None,
    state: ConversationState | None,
    active_after: datetime | None,
    active_before: datetime | None,
    cursor: str | None,
    limit: int,
) -> tuple[list[tuple[Conversation, bool]], str | None]:
    """Most recently active first."""
    query: Select[Any] = (
        select(Conversation, opted_out_clause().label("opted_out"))
        .order_by(Conversation.last_activity_at.desc(), Conversation.conversation_id.desc())
        .limit(limit + 1)
    )
    if channel_id is not None:
        query = query.where(Conversation.channel_id == channel_id)
    if state == "answered":
        query = query.where(Conversation.unanswered_since.is_(None))
    elif state is not None:
        query = query.where(
            Conversation.unanswered_since.is_not(None),
            Conversation.unanswered_notified.is_(state == "unanswered"),
        )
    if active_after is not None:
        query = query.where(Conversation.last_activity_at >= active_after)
    if active_before is not None:
        query = query.where(Conversation.last_activity_at < active_before)
    if cursor is not None:
        at, conversation_id = decode_cursor(cursor, 2)
        instant = _instant(at)
        if not isinstance(conversation_id, str):
            raise InvalidCursor("invalid cursor: pass the next_cursor of a previous page")
        query = query.where(
            or_(
                Conversation.last_activity_at < instant,
                and_(
                    Conversation.last_activity_at == instant,
                    Conversation.conversation_id < conversation_id,
                ),
            )
        )
    rows = [(row[0], bool(row[1])) for row in (await session.execute(query)).all()]
    if len(rows) > limit:
        last = rows[limit - 1][0]
        return rows[:limit], encode_cursor(last.last_activity_at.isoformat(), last.conversation_id)
    return rows, None


async def list_timeline(
    session: AsyncSession, conversation_id: str, *, cursor: str | None, limit: int
) -> tuple[list[TimelineEntry], str | None]:
    """Oldest first, inbound and outbound interleaved by when they happened."""
    query = (
        select(TimelineEntry)
        .where(TimelineEntry.conversation_id == conversation_id)
        .order_by(TimelineEntry.occurred_at, TimelineEntry.id)
        .limit(limit + 1)
    )
    if cursor is not None:
        at, entry_id = decode_cursor(cursor, 2)
        instant = _instant(at)
        if not isinstance(entry_id, int):
            raise InvalidCursor("invalid cursor: pass the next_cursor of a previous page")
        query = query.where(
            or_(
                TimelineEntry.occurred_at > instant,
                and_(TimelineEntry.occurred_at == instant, TimelineEntry.id > entry_id),
            )
        )
    rows = list(await session.scalars(query))
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], encode_cursor(last.occurred_at.isoformat(), last.id)
    return rows, None


async def list_opt_outs(
    session: AsyncSession, channel_id: uuid.UUID, *, cursor: str | None, limit: int
) -> tuple[list[OptOut], str | None]:
    query = (
        select(OptOut)
        .where(OptOut.channel_id == channel_id)
        .order_by(OptOut.contact_key)
        .limit(limit + 1)
    )
    if cursor is not None:
        (after,) = decode_cursor(cursor, 1)
        if not isinstance(after, str):
            raise InvalidCursor("invalid cursor: pass the next_cursor of a previous page")
        query = query.where(OptOut.contact_key > after)
    rows = list(await session.scalars(query))
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1].contact_key)
    return rows, None
