"""Canonical inbound events (``inbound.v1``) applied to conversations.

* ``message.received`` from the customer: a timeline entry (deduplicated on the platform
  message id), the conversation's last inbound time; an opt-out/opt-in keyword changes the
  contact's opt-out; otherwise, if no message of the customer is waiting for a reply, a new
  *episode* opens (``unanswered_since``), and its first message may get the automatic
  acknowledgement. Reactions are recorded but open no episode.
* ``message.received`` with ``echo`` (the business wrote from another app, e.g. the WhatsApp
  Business app): an outbound entry, and a reply that answers the episode.
* ``message.edited`` / ``message.deleted``: update the customer's entry.
* ``message.status``: moves our outbound entry forward (matched by platform message id); an
  opt-out error code (Twilio 21610, WhatsApp 131050) opts the contact out.
* ``conversation.updated`` with ``blocked``: Telegram's "bot blocked" opts out, unblocking in.

Events are read tolerantly (only what is needed); anything else is ignored.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from channels.models import Channel
from conversations import contracts, metrics, rules
from conversations.answering import answer
from conversations.keys import inbound_peer
from conversations.models import Conversation, TimelineEntry
from conversations.service import (
    Party,
    channel_settings,
    is_opted_out,
    keywords,
    locked_conversation,
    set_opt_out,
    stage,
)
from conversations.states import advance
from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)

AUTO_REPLY_TTL = timedelta(hours=1)
"""An acknowledgement not sent within this (outbox down, channel paused) is pointless."""


def parse_time(value: Any, now: datetime) -> datetime:
    """An RFC 3339 instant, capped at ``now`` (clock skew); ``now`` when absent or invalid."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return now
        if parsed.tzinfo is not None:
            return min(parsed, now)
    return now


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


async def _channel_exists(session: AsyncSession, channel_id: uuid.UUID) -> bool:
    """Cached for the session (one consumer batch): channels are never deleted."""
    known: dict[uuid.UUID, bool] = session.info.setdefault("conversations.channels", {})
    if channel_id not in known:
        found = await session.scalar(select(Channel.id).where(Channel.id == channel_id))
        known[channel_id] = found is not None
    return known[channel_id]


async def apply_inbound(
    session: AsyncSession, settings: Settings, event: dict[str, Any], now: datetime
) -> None:
    data = _obj(event.get("data"))
    platform = _str(data.get("platform"))
    conversation_id = _str(data.get("conversation_id"))
    event_id = _str(event.get("id"))
    try:
        channel_id = uuid.UUID(str(data.get("channel_id")))
    except ValueError:
        return
    if platform is None or conversation_id is None or event_id is None:
        return
    peer = inbound_peer(platform, _str(data.get("account_id")), conversation_id)
    if peer is None or not await _channel_exists(session, channel_id):
        return
    party = Party(conversation_id, channel_id, platform, peer)
    at = parse_time(event.get("time"), now)
    kind = event.get("type")
    if kind == "message.received":
        await _received(session, settings, party, event_id, data, at, now)
    elif kind in ("message.edited", "message.deleted"):
        await _changed(session, party, kind, _obj(data.get("message")))
    elif kind == "message.status":
        await _status(session, settings, party, event_id, _obj(data.get("status")), at, now)
    elif kind == "conversation.updated":
        blocked = _obj(data.get("conversation")).get("blocked")
        if isinstance(blocked, bool):
            conversation = await locked_conversation(session, party, now)
            await set_opt_out(
                session,
                settings,
                conversation,
                channel_id=channel_id,
                key=party.contact_key,
                opted_out=blocked,
                source="platform",
                reason=f"{platform}_blocked" if blocked else f"{platform}_unblocked",
                trigger=event_id,
                at=at,
            )


async def _received(
    session: AsyncSession,
    settings: Settings,
    party: Party,
    event_id: str,
    data: dict[str, Any],
    at: datetime,
    now: datetime,
) -> None:
    message = _obj(data.get("message"))
    echo = message.get("echo") is True
    contact = data.get("contact") if isinstance(data.get("contact"), dict) else None
    conversation = await locked_conversation(
        session, party, now, contact=None if echo else contact, canonical=True
    )
    message_id = _str(message.get("id")) or event_id
    inserted = await session.scalar(
        pg_insert(TimelineEntry)
        .values(
            conversation_id=conversation.conversation_id,
            channel_id=party.channel_id,
            direction="outbound" if echo else "inbound",
            message_id=message_id,
            platform_message_id=_str(message.get("id")),
            kind=_str(message.get("kind")),
            text=_str(message.get("text")),
            media=message.get("media") if isinstance(message.get("media"), dict) else None,
            state="sent" if echo else "received",
            occurred_at=at,
        )
        .on_conflict_do_nothing()
        .returning(TimelineEntry.id)
    )
    if inserted is None:
        return  # a redelivered event: its effects are already recorded
    conversation.last_activity_at = max(conversation.last_activity_at, now)
    if echo:
        conversation.last_outbound_at = max(conversation.last_outbound_at or at, at)
        answer(session, settings, conversation, at=at, message_id=message_id, now=now)
        return
    conversation.last_inbound_at = max(conversation.last_inbound_at or at, at)
    row = await channel_settings(session, party.channel_id)
    opt_out, opt_in = keywords(row)
    action = rules.keyword_action(_str(message.get("text")), opt_out, opt_in)
    if action is not None:
        await set_opt_out(
            session,
            settings,
            conversation,
            channel_id=party.channel_id,
            key=party.contact_key,
            opted_out=action == "opt_out",
            source="keyword",
            reason=rules.normalise_keyword(_str(message.get("text")) or ""),
            trigger=event_id,
            at=at,
        )
        return
    if message.get("kind") == "reaction" or conversation.unanswered_since is not None:
        return
    if _answered_before_seen(conversation.last_reply_at, at, now):
        return
    conversation.episode += 1
    conversation.unanswered_since = now
    conversation.unanswered_notified = False
    if row is not None and row.auto_reply:
        await _acknowledge(
            session, settings, conversation, rules.auto_reply_from_json(row.auto_reply), now
        )


RACE_WINDOW = timedelta(minutes=5)


def _answered_before_seen(last_reply_at: datetime | None, at: datetime, now: datetime) -> bool:
    """Inbound and lifecycle events come from different topics: a reply's ``message.sent`` may
    be consumed before the customer message it answers. A message the platform dates before
    our last reply is then already answered, but only a recent date is trusted for this
    (replayed webhooks and test payloads carry old dates; clocks differ by seconds)."""
    return last_reply_at is not None and now - RACE_WINDOW <= at <= last_reply_at


async def _acknowledge(
    session: AsyncSession,
    settings: Settings,
    conversation: Conversation,
    rule: rules.AutoReply,
    now: datetime,
) -> None:
    text = rules.auto_reply_text(
        rule,
        at=now,
        last_auto_reply_at=conversation.last_auto_reply_at,
        opted_out=await is_opted_out(session, conversation.channel_id, conversation.contact_key),
        replied_in_episode=False,  # the episode opened with this very message
    )
    if text is None:
        return
    command_id = "conv-ack-" + contracts.event_id(
        "auto-reply", conversation.conversation_id, str(conversation.episode)
    )
    value = contracts.send_command(
        command_id=command_id,
        channel_id=str(conversation.channel_id),
        to=conversation.recipient,
        text=text,
        conversation_id=conversation.conversation_id,
        reason="auto_reply",
        at=now,
        not_after=now + AUTO_REPLY_TTL,
    )
    stage(
        session,
        settings,
        contracts.COMMANDS_TOPIC,
        f"{conversation.channel_id}:{conversation.recipient}",
        value,
    )
    conversation.last_auto_reply_at = now
    hours = "in" if text == rule.text_in_hours and rules.within_hours(rule, now) else "outside"
    metrics.AUTO_REPLIES.labels(str(conversation.channel_id), hours).inc()
    log.info(
        "conversations.auto_reply_staged",
        conversation_id=conversation.conversation_id,
        command_id=command_id,
        hours=hours,
    )


async def _changed(session: AsyncSession, party: Party, kind: str, message: dict[str, Any]) -> None:
    message_id = _str(message.get("id"))
    if message_id is None:
        return
    entry = await session.scalar(
        select(TimelineEntry)
        .join(Conversation, Conversation.conversation_id == TimelineEntry.conversation_id)
        .where(
            Conversation.channel_id == party.channel_id,
            Conversation.contact_key == party.contact_key,
            TimelineEntry.direction == "inbound",
            TimelineEntry.message_id == message_id,
        )
        .with_for_update(of=TimelineEntry)
    )
    if entry is None:
        return
    if kind == "message.deleted":
        entry.state = "deleted"
        entry.text = None
    else:
        entry.state = "edited"
        entry.text = _str(message.get("text")) or entry.text


async def _status(
    session: AsyncSession,
    settings: Settings,
    party: Party,
    event_id: str,
    status: dict[str, Any],
    at: datetime,
    now: datetime,
) -> None:
    platform_id = _str(status.get("message_id"))
    state = _str(status.get("state"))
    if platform_id is not None and state is not None:
        entry = await session.scalar(
            select(TimelineEntry)
            .where(
                TimelineEntry.channel_id == party.channel_id,
                TimelineEntry.platform_message_id == platform_id,
                TimelineEntry.direction == "outbound",
            )
            .limit(1)
            .with_for_update()
        )
        if entry is not None:
            entry.state = advance(entry.state, state)
    code = _str(_obj(status.get("error")).get("code"))
    signal = rules.platform_opt_out(party.platform, code)
    if signal is not None:
        conversation = await locked_conversation(session, party, now)
        await set_opt_out(
            session,
            settings,
            conversation,
            channel_id=party.channel_id,
            key=conversation.contact_key,
            opted_out=True,
            source="platform",
            reason=signal,
            trigger=event_id,
            at=at,
        )


def utcnow() -> datetime:
    return datetime.now(UTC)
