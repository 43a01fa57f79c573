"""Outbound lifecycle events (``outbound.events.v1``) applied to conversations.

The event names channel and recipient (``to``); the conversation is the one whose contact key
matches (``keys.contact_key``), or a new one named as the normalizer would name it
(``keys.outbound_conversation_id``, account id from the channel). Each outbox message is one
timeline entry whose state moves forward only.

A reply is the first ``message.sent`` of a message that is not automatic
(``metadata.switchboard.automatic``) and not a typing indicator, read mark, button answer or
reaction (``data.content_kind`` of the outbox's lifecycle events). It answers the open episode.
A ``message.failed`` with an opt-out error code opts the recipient out.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import Channel
from conversations import contracts, rules
from conversations.answering import answer
from conversations.inbound import parse_time
from conversations.keys import outbound_conversation_id
from conversations.models import MESSAGE_ID_MAX, TimelineEntry
from conversations.service import Party, locked_conversation, set_opt_out
from conversations.states import RANK, advance
from infra.settings import Settings

NOT_REPLIES = frozenset({"typing", "mark_read", "reaction", "callback_answer"})


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


async def apply_lifecycle(
    session: AsyncSession, settings: Settings, event: dict[str, Any], now: datetime
) -> None:
    event_type = _str(event.get("type")) or ""
    state = event_type.removeprefix("message.")
    raw_data = event.get("data")
    data: dict[str, Any] = raw_data if isinstance(raw_data, dict) else {}
    message_id, to = _str(data.get("message_id")), _str(data.get("to"))
    if state not in RANK or message_id is None or to is None or len(message_id) > MESSAGE_ID_MAX:
        return
    try:
        channel_id = uuid.UUID(str(data.get("channel_id")))
    except ValueError:
        return
    channel = await session.get(Channel, channel_id)
    if channel is None:
        return
    at = parse_time(event.get("time"), now)
    party = Party(
        outbound_conversation_id(channel.platform, channel.account_id, to),
        channel_id,
        channel.platform,
        to,
    )
    conversation = await locked_conversation(session, party, now)
    raw_metadata = data.get("metadata")
    metadata: dict[str, Any] = raw_metadata if isinstance(raw_metadata, dict) else {}
    automatic = contracts.is_automatic(metadata)
    entry = await session.scalar(
        select(TimelineEntry)
        .where(
            TimelineEntry.conversation_id == conversation.conversation_id,
            TimelineEntry.direction == "outbound",
            TimelineEntry.message_id == message_id,
        )
        .with_for_update()
    )
    raw_error = data.get("error")
    error: dict[str, Any] | None = raw_error if isinstance(raw_error, dict) else None
    before = entry.state if entry is not None else None
    if entry is None:
        entry = TimelineEntry(
            conversation_id=conversation.conversation_id,
            channel_id=channel_id,
            direction="outbound",
            message_id=message_id,
            kind=_str(data.get("content_kind")),
            state=state,
            automatic=automatic,
            metadata_=metadata or None,
            occurred_at=at,
        )
        session.add(entry)
    else:
        entry.state = advance(entry.state, state)
    entry.platform_message_id = _str(data.get("platform_message_id")) or entry.platform_message_id
    if error is not None:
        entry.error = error
    conversation.last_activity_at = max(conversation.last_activity_at, now)
    first_sent = state == "sent" and (before is None or RANK.get(before, -1) < RANK["sent"])
    if first_sent:
        conversation.last_outbound_at = max(conversation.last_outbound_at or at, at)
        if not automatic and entry.kind not in NOT_REPLIES:
            answer(session, settings, conversation, at=at, message_id=message_id, now=now)
    if state == "failed" and error is not None:
        signal = rules.platform_opt_out(channel.platform, _str(error.get("code")))
        if signal is not None:
            await set_opt_out(
                session,
                settings,
                conversation,
                channel_id=channel_id,
                key=conversation.contact_key,
                opted_out=True,
                source="platform",
                reason=signal,
                trigger=_str(event.get("id")) or message_id,
                at=at,
            )
