"""A reply answers the conversation's open episode: ``conversation.answered`` with the
response time, the histogram, and the episode closes (the next customer message opens one)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from conversations import contracts, metrics
from conversations.models import Conversation
from conversations.service import stage_conversation_event
from infra.settings import Settings


def answer(
    session: AsyncSession,
    settings: Settings,
    conversation: Conversation,
    *,
    at: datetime,
    message_id: str,
    now: datetime,
) -> None:
    """``at`` is when the reply was sent. Nothing happens when no episode is open."""
    conversation.last_reply_at = max(conversation.last_reply_at or at, at)
    since = conversation.unanswered_since
    if since is None:
        return
    response = max((at - since).total_seconds(), 0.0)
    stage_conversation_event(
        session,
        settings,
        "conversation.answered",
        conversation,
        event_id=contracts.event_id(
            "conversation.answered", conversation.conversation_id, str(conversation.episode)
        ),
        at=now,
        data={
            "episode": conversation.episode,
            "unanswered_since": contracts.rfc3339(since),
            "answered_at": contracts.rfc3339(at),
            "response_time_seconds": response,
            "was_unanswered": conversation.unanswered_notified,
            "message_id": message_id,
        },
    )
    metrics.RESPONSE_TIME.labels(str(conversation.channel_id)).observe(response)
    conversation.unanswered_since = None
    conversation.unanswered_notified = False
