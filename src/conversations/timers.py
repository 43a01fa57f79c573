"""The unanswered-conversation timer, kept in PostgreSQL (no timer lives in memory).

A conversation is due when its episode has waited ``unanswered_after_seconds`` (of its
channel's settings) since ``unanswered_since`` and was not reported yet. Any number of
replicas poll; each claims due rows with ``FOR UPDATE SKIP LOCKED``, stages
``conversation.unanswered`` and sets ``unanswered_notified`` in the same transaction, so an
episode is reported once whatever the replicas and restarts (and the event id, derived from
conversation and episode, is the same if a relay republishes it). Changing the threshold
applies to episodes already open.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from conversations import contracts
from conversations.models import Conversation
from conversations.service import stage_conversation_event
from infra.settings import Settings

_DUE = text(
    """
    SELECT c.conversation_id, s.unanswered_after_seconds
      FROM conv_conversations c
      JOIN conv_channel_settings s ON s.channel_id = c.channel_id
     WHERE c.unanswered_since IS NOT NULL
       AND NOT c.unanswered_notified
       AND s.unanswered_after_seconds IS NOT NULL
       AND c.unanswered_since + s.unanswered_after_seconds * interval '1 second' <= :now
     ORDER BY c.unanswered_since
     LIMIT :limit
       FOR UPDATE OF c SKIP LOCKED
    """
)


async def fire_due(
    session: AsyncSession, settings: Settings, now: datetime, limit: int = 200
) -> int:
    """Report the due episodes (at most ``limit``) in the caller's transaction; their count."""
    rows = (await session.execute(_DUE, {"now": now, "limit": limit})).all()
    for conversation_id, after in rows:
        conversation = await session.get(Conversation, conversation_id)
        if conversation is None or conversation.unanswered_since is None:
            continue
        stage_conversation_event(
            session,
            settings,
            "conversation.unanswered",
            conversation,
            event_id=contracts.event_id(
                "conversation.unanswered", conversation_id, str(conversation.episode)
            ),
            at=now,
            data={
                "episode": conversation.episode,
                "unanswered_since": contracts.rfc3339(conversation.unanswered_since),
                "unanswered_after_seconds": after,
            },
        )
        conversation.unanswered_notified = True
    return len(rows)
