"""Conversation state shared by the inbound and lifecycle handlers: finding (or opening) a
conversation under a row lock, staging events, opt-outs, per-channel settings.

Everything runs in the caller's transaction; the consumer or endpoint commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from conversations import contracts, metrics
from conversations.keys import contact_key
from conversations.models import ChannelSettings, Conversation, OptOut, PendingEvent
from conversations.rules import DEFAULT_OPT_IN, DEFAULT_OPT_OUT
from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)


class Unrecordable(Exception):
    """An event this layer cannot record (logged and skipped by the consumer)."""


@dataclass(frozen=True)
class Party:
    """Who a conversation is with, as both sides name it."""

    conversation_id: str
    channel_id: uuid.UUID
    platform: str
    recipient: str

    @property
    def contact_key(self) -> str:
        return contact_key(self.platform, self.recipient)


LOCKED = "conversations.locked"


async def lock_in_order(session: AsyncSession, keys: set[tuple[uuid.UUID, str]]) -> None:
    """Lock the existing conversations of a batch at once, in one order (channel, contact key)
    shared by every transaction: two replicas whose batches touch the same conversations wait
    for each other instead of deadlocking, and each conversation costs no further round trip
    (``locked_conversation`` takes it from here)."""
    if not keys:
        return
    rows = await session.scalars(
        select(Conversation)
        .where(tuple_(Conversation.channel_id, Conversation.contact_key).in_(sorted(keys)))
        .order_by(Conversation.channel_id, Conversation.contact_key)
        .with_for_update()
    )
    session.info[LOCKED] = {(c.channel_id, c.contact_key): c for c in rows}


async def locked_conversation(
    session: AsyncSession,
    party: Party,
    now: datetime,
    *,
    contact: dict[str, Any] | None = None,
    canonical: bool = False,
) -> Conversation:
    """The conversation with ``party`` on its channel, created if new (active ``now``: activity
    and retention count from when Switchboard recorded something, never from a platform's date,
    which may be old), locked (``FOR UPDATE``)
    until the transaction ends: the inbound and lifecycle consumers, and the timer, of any
    replica serialise on it.

    ``canonical``: ``party.conversation_id`` comes from an inbound event (the normalizer's id).
    A conversation first opened by a proactive send got a computed id; if the normalizer names
    it differently (e.g. an account id spelt otherwise), it takes the canonical one.
    """
    locked: dict[tuple[uuid.UUID, str], Conversation] = session.info.get(LOCKED, {})
    conversation = locked.get((party.channel_id, party.contact_key))
    query = (
        select(Conversation)
        .where(
            Conversation.channel_id == party.channel_id,
            Conversation.contact_key == party.contact_key,
        )
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if conversation is None:
        conversation = (await session.scalars(query)).one_or_none()
    if conversation is None:
        await session.execute(
            pg_insert(Conversation)
            .values(
                conversation_id=party.conversation_id,
                channel_id=party.channel_id,
                platform=party.platform,
                contact_key=party.contact_key,
                recipient=party.recipient,
                contact=contact,
                last_activity_at=now,
            )
            .on_conflict_do_nothing()
        )
        conversation = (await session.scalars(query)).one_or_none()
    if conversation is None:
        # The id is taken by another contact key of the channel (two spellings the keys
        # cannot tell apart): record nothing rather than guess, and never block the partition.
        raise Unrecordable(f"conversation id taken by another contact: {party.conversation_id}")
    if canonical and conversation.conversation_id != party.conversation_id:
        clash = await session.get(Conversation, party.conversation_id)
        if clash is None:
            log.info(
                "conversations.renamed",
                old=conversation.conversation_id,
                new=party.conversation_id,
            )
            conversation.conversation_id = party.conversation_id
            conversation.recipient = party.recipient
            await session.flush()
    if contact is not None:
        conversation.contact = contact
    return conversation


def stage(session: AsyncSession, settings: Settings, topic: str, key: str, value: bytes) -> None:
    session.add(PendingEvent(topic=settings.topic(topic), key=key, value=value))


def stage_conversation_event(
    session: AsyncSession,
    settings: Settings,
    event_type: contracts.ConversationEventType,
    conversation: Conversation,
    *,
    event_id: str,
    at: datetime,
    data: dict[str, Any],
) -> None:
    value = contracts.conversation_event(
        event_type,
        event_id=event_id,
        channel_id=str(conversation.channel_id),
        conversation_id=conversation.conversation_id,
        at=at,
        data={"contact_id": conversation.contact_key, **data},
    )
    stage(session, settings, contracts.CONVERSATIONS_TOPIC, conversation.conversation_id, value)
    metrics.EVENTS.labels(event_type).inc()
    log.info(
        "conversations.event_staged",
        type=event_type,
        conversation_id=conversation.conversation_id,
        event_id=event_id,
    )


async def channel_settings(session: AsyncSession, channel_id: uuid.UUID) -> ChannelSettings | None:
    """Cached for the session (one consumer batch; a change applies from the next batch)."""
    cache: dict[uuid.UUID, ChannelSettings | None] = session.info.setdefault(
        "conversations.settings", {}
    )
    if channel_id not in cache:
        cache[channel_id] = await session.get(ChannelSettings, channel_id)
    return cache[channel_id]


def keywords(row: ChannelSettings | None) -> tuple[list[str] | tuple[str, ...], ...]:
    opt_out = row.opt_out_keywords if row and row.opt_out_keywords is not None else DEFAULT_OPT_OUT
    opt_in = row.opt_in_keywords if row and row.opt_in_keywords is not None else DEFAULT_OPT_IN
    return opt_out, opt_in


async def is_opted_out(session: AsyncSession, channel_id: uuid.UUID, key: str) -> bool:
    found = await session.scalar(
        select(OptOut.contact_key).where(OptOut.channel_id == channel_id, OptOut.contact_key == key)
    )
    return found is not None


async def set_opt_out(
    session: AsyncSession,
    settings: Settings,
    conversation: Conversation | None,
    *,
    channel_id: uuid.UUID,
    key: str,
    opted_out: bool,
    source: str,
    reason: str | None,
    trigger: str,
    at: datetime,
) -> bool:
    """Opt ``key`` out of (or back into) the channel; True if that changed anything, in which
    case ``contact.opted_out`` / ``contact.opted_in`` is staged (id derived from ``trigger``,
    the fact that caused it). Events go to the conversation's key when there is one, else to
    ``<channel_id>:<contact key>``."""
    if opted_out:
        changed = (
            await session.execute(
                pg_insert(OptOut)
                .values(
                    channel_id=channel_id,
                    contact_key=key,
                    source=source,
                    reason=reason,
                    opted_out_at=at,
                )
                .on_conflict_do_nothing()
                .returning(OptOut.contact_key)
            )
        ).first() is not None
    else:
        changed = (
            await session.execute(
                delete(OptOut)
                .where(OptOut.channel_id == channel_id, OptOut.contact_key == key)
                .returning(OptOut.contact_key)
            )
        ).first() is not None
    if not changed:
        return False
    event_type: contracts.ConversationEventType = (
        "contact.opted_out" if opted_out else "contact.opted_in"
    )
    conversation_id = conversation.conversation_id if conversation else f"{channel_id}:{key}"
    value = contracts.conversation_event(
        event_type,
        event_id=contracts.event_id(event_type, trigger),
        channel_id=str(channel_id),
        conversation_id=conversation_id,
        at=at,
        data={"contact_id": key, "source": source, "reason": reason},
    )
    stage(session, settings, contracts.CONVERSATIONS_TOPIC, conversation_id, value)
    metrics.EVENTS.labels(event_type).inc()
    log.info("conversations.opt_out_changed", channel_id=str(channel_id), opted_out=opted_out)
    return True
