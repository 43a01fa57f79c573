"""SQL of the outbox's messages: storing a command, finding it again, and the queries of the
messages API (one message, its attempts, a page of messages, the rows an operator redrives).

The rules that decide what to store live in ``outbox.service``; the delivery runtime's own
statements (channel leases, claims, outcomes) live in ``outbox.leases``. Every function here
runs in the caller's session and transaction and never commits.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from infra.errors import BadRequest
from outbox.errors import MessageNotFound
from outbox.models import OutboxAttempt, OutboxMessage

__all__ = [
    "REDRIVABLE_STATES",
    "MessageFilter",
    "RedriveFilter",
    "attempt_history",
    "decode_cursor",
    "encode_cursor",
    "find_by_command_id",
    "get_message",
    "insert_message",
    "list_messages",
    "lock_redrivable",
]

REDRIVABLE_STATES = ("dead", "failed")


async def find_by_command_id(session: AsyncSession, command_id: str) -> OutboxMessage | None:
    result: OutboxMessage | None = await session.scalar(
        select(OutboxMessage).where(OutboxMessage.command_id == command_id)
    )
    return result


async def insert_message(session: AsyncSession, values: dict[str, Any]) -> OutboxMessage | None:
    """Insert the row unless its ``command_id`` is already stored; None when a concurrent
    request with the same id won the insert (the caller answers with the winner's row)."""
    stmt = (
        pg_insert(OutboxMessage)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["command_id"])
        .returning(OutboxMessage)
    )
    inserted: OutboxMessage | None = (await session.scalars(stmt)).one_or_none()
    return inserted


async def get_message(
    session: AsyncSession, message_id: uuid.UUID, *, for_update: bool = False
) -> OutboxMessage:
    query = select(OutboxMessage).where(OutboxMessage.id == message_id)
    if for_update:
        query = query.with_for_update()
    message: OutboxMessage | None = await session.scalar(query)
    if message is None:
        raise MessageNotFound()
    return message


async def attempt_history(session: AsyncSession, message_id: uuid.UUID) -> list[OutboxAttempt]:
    rows = await session.scalars(
        select(OutboxAttempt)
        .where(OutboxAttempt.message_id == message_id)
        .order_by(OutboxAttempt.attempt, OutboxAttempt.id)
    )
    return list(rows)


@dataclass(frozen=True, slots=True)
class RedriveFilter:
    states: tuple[str, ...] = REDRIVABLE_STATES
    channel_id: uuid.UUID | None = None
    error_code: str | None = None
    """``last_error.code`` of the message (e.g. ``190``, ``http_503``, ``expired``)."""
    finished_after: datetime | None = None
    finished_before: datetime | None = None


def _redrivable(where: RedriveFilter) -> Select[OutboxMessage]:
    query = select(OutboxMessage).where(OutboxMessage.state.in_(where.states))
    if where.channel_id is not None:
        query = query.where(OutboxMessage.channel_id == where.channel_id)
    if where.error_code is not None:
        query = query.where(OutboxMessage.last_error["code"].astext == where.error_code)
    if where.finished_after is not None:
        query = query.where(OutboxMessage.finished_at >= where.finished_after)
    if where.finished_before is not None:
        query = query.where(OutboxMessage.finished_at < where.finished_before)
    return query


async def lock_redrivable(
    session: AsyncSession, where: RedriveFilter, limit: int
) -> Sequence[OutboxMessage]:
    """Up to ``limit`` messages matching ``where``, oldest finished first, locked for update;
    rows another transaction holds are skipped (a concurrent redrive of the same filter takes
    other rows instead of waiting)."""
    query = (
        _redrivable(where)
        .order_by(OutboxMessage.finished_at, OutboxMessage.seq)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(await session.scalars(query))


@dataclass(frozen=True, slots=True)
class MessageFilter:
    channel_id: uuid.UUID | None = None
    to: str | None = None
    states: tuple[str, ...] = ()
    created_after: datetime | None = None
    created_before: datetime | None = None


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"s:{seq}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        if len(cursor) > 64:
            raise ValueError(cursor)
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "s":
            raise ValueError(cursor)
        seq = int(value)
        if not 0 <= seq < 2**63:  # a bigint
            raise ValueError(cursor)
        return seq
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("invalid cursor: pass the next_cursor of a previous page") from None


async def list_messages(
    session: AsyncSession, filters: MessageFilter, *, cursor: str | None, limit: int
) -> tuple[list[OutboxMessage], str | None]:
    """Newest first (by acceptance order, ``seq``); the cursor is opaque to clients."""
    query = select(OutboxMessage).order_by(OutboxMessage.seq.desc()).limit(limit + 1)
    if filters.channel_id is not None:
        query = query.where(OutboxMessage.channel_id == filters.channel_id)
    if filters.to is not None:
        if "\x00" in filters.to:
            raise BadRequest("to must not contain the NUL character")
        query = query.where(OutboxMessage.recipient == filters.to)
    if filters.states:
        query = query.where(OutboxMessage.state.in_(filters.states))
    if filters.created_after is not None:
        query = query.where(OutboxMessage.created_at >= filters.created_after)
    if filters.created_before is not None:
        query = query.where(OutboxMessage.created_at < filters.created_before)
    if cursor is not None:
        query = query.where(OutboxMessage.seq < decode_cursor(cursor))
    rows = list(await session.scalars(query))
    if len(rows) > limit:
        return rows[:limit], encode_cursor(rows[limit - 1].seq)
    return rows, None
