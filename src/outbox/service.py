"""The outbox's use cases: accepting a send command (idempotency, validation against the
channel, storage) and the operator's actions on stored messages (cancel, redrive). Their SQL
is in ``outbox.repository``.

One function, ``accept``, serves both doors (``POST /v1/messages`` and the Kafka commands
topic). It stages the row and its ``message.queued`` (or ``message.failed``) lifecycle event in
the caller's transaction and never commits: the edge commits before it acknowledges.

Idempotency: ``command_id`` is unique in ``outbox_messages``. ``request_hash`` is the SHA-256 of
the canonical JSON of the command without its id (keys sorted, ``not_after`` in UTC), so a
replay of the same command answers with the stored message and a different body under the same
id is ``IdempotencyConflict``. Rows are kept, so the key is honoured as long as the row lives
(at least 24 h). A replay is answered before validation: a channel disabled since the first
request does not turn a replay into an error.

Refusals (``outbox.errors.Rejected``): unknown or disabled channel, content the platform cannot
express, a free-form WhatsApp message outside the 24-hour window, a ``not_after`` already past,
a proactive message to an opted-out contact or beyond the channel's frequency cap
(``outbox.policy``, which also picks the default lane).
The API raises them (422, nothing stored). Kafka commands are stored directly as ``failed`` with
the reason in ``last_error`` and a ``message.failed`` event, except an unknown channel, which
cannot be stored (the row references its channel) and is dead-lettered by the consumer.

``cancel``, ``redrive`` and ``redrive_matching`` serve the messages API; each stages its
lifecycle event with the state change, in the same transaction.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from channels.addressing import addressing
from channels.models import Channel
from infra import telemetry
from infra.settings import Settings
from outbox import events, policy, repository, templates
from outbox.contracts import LifecycleError, SendCommand, signal_not_after
from outbox.errors import (
    ChannelDisabled,
    ContentNotSupported,
    IdempotencyConflict,
    InvalidCommand,
    InvalidState,
    Rejected,
    UnknownChannelReference,
    WindowClosed,
)
from outbox.models import ConversationWindow, OutboxMessage
from outbox.platforms import SENDERS, UnsupportedContent
from outbox.repository import REDRIVABLE_STATES, RedriveFilter

__all__ = [
    "WHATSAPP_WINDOW",
    "Accepted",
    "Source",
    "accept",
    "cancel",
    "check",
    "conversation_key",
    "needs_window",
    "redrive",
    "redrive_matching",
    "request_hash",
    "resolve_channel",
    "window_key",
]

Source = Literal["api", "kafka"]

WHATSAPP_WINDOW = timedelta(hours=24)
"""WhatsApp's customer service window: free-form messages only within 24 h of the last
inbound message; outside it, only templates."""


@dataclass(frozen=True, slots=True)
class Accepted:
    message: OutboxMessage
    replayed: bool
    """True when the command id was already stored with the same body (nothing new staged)."""


def request_hash(command: SendCommand) -> str:
    """SHA-256 (hex) of the canonical JSON of the command, its id excluded."""
    body = command.model_dump(mode="json", exclude={"id"})
    if command.not_after is not None:
        body["not_after"] = command.not_after.astimezone(UTC).isoformat()
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def conversation_key(channel_id: uuid.UUID | str, to: str) -> str:
    """``channel_id:recipient``: the FIFO unit and the Kafka key of commands and events."""
    return f"{channel_id}:{to}"


def window_key(channel_id: uuid.UUID | str, platform: str, peer: str) -> str:
    """Key of ``ConversationWindow``. WhatsApp peers are compared by digits only, so the
    inbound ``wa_id`` (``393331234567``) matches an outbound ``to`` of ``+39 333 1234567``
    (``channels.addressing``)."""
    return f"{channel_id}:{addressing(platform).window_peer(peer)}"


def needs_window(platform: str, command: SendCommand, account_id: str = "") -> bool:
    """Free-form WhatsApp messages (Cloud API, or Twilio with a ``whatsapp:`` recipient or
    sender ``account_id``) need the 24-hour window; templates do not."""
    if command.content.kind == "template":
        return False
    return addressing(platform).needs_window(command.to, account_id)


async def resolve_channel(session: AsyncSession, command: SendCommand) -> Channel:
    try:
        channel_id = uuid.UUID(command.channel_id)
    except ValueError:
        raise UnknownChannelReference(
            f"channel_id {command.channel_id!r} is not a channel id"
        ) from None
    channel = await session.get(Channel, channel_id)
    if channel is None:
        raise UnknownChannelReference(f"channel {command.channel_id} does not exist")
    return channel


async def check(
    session: AsyncSession,
    settings: Settings,
    command: SendCommand,
    channel: Channel,
    now: datetime,
) -> None:
    """Raise a ``Rejected`` subclass if the command must not be sent on this channel."""
    if not channel.enabled:
        raise ChannelDisabled(f"channel {channel.id} is disabled")
    if command.not_after is not None and command.not_after <= now:
        raise InvalidCommand("not_after is already past: the message would never be sent")
    sender = SENDERS.get(channel.platform)
    if sender is None:
        raise ContentNotSupported(f"no sender for platform {channel.platform!r}")
    try:
        sender.validate(command, account_id=channel.account_id)
    except UnsupportedContent as exc:
        raise ContentNotSupported(str(exc)) from None
    await templates.check_send(session, channel, command)
    if settings.outbox_whatsapp_window_check and needs_window(
        channel.platform, command, channel.account_id
    ):
        key = window_key(channel.id, channel.platform, command.to)
        window = await session.get(ConversationWindow, key)
        if window is None:
            raise WindowClosed(
                "no inbound WhatsApp message from this recipient: outside the 24-hour customer "
                "service window only a template message can be sent"
            )
        if window.last_inbound_at < now - WHATSAPP_WINDOW:
            raise WindowClosed(
                "the 24-hour customer service window closed (last inbound message at "
                f"{window.last_inbound_at.astimezone(UTC).isoformat()}): send a template message"
            )


def _replay(existing: OutboxMessage, digest: str) -> Accepted:
    if existing.request_hash != digest:
        raise IdempotencyConflict(
            f"command id {existing.command_id!r} was already used for a different message "
            "(same Idempotency-Key, different body): use a new key for a new message",
            details={"message_id": str(existing.id)},
        )
    return Accepted(existing, replayed=True)


async def accept(
    session: AsyncSession,
    settings: Settings,
    command: SendCommand,
    *,
    source: Source,
    now: datetime | None = None,
) -> Accepted:
    """Stage the command (or find its earlier copy) in the caller's transaction.

    Raises ``IdempotencyConflict``; ``Rejected`` for API commands (and for Kafka commands to an
    unknown channel). Kafka commands refused for any other reason are staged as ``failed``.
    """
    now = now or datetime.now(UTC)
    digest = request_hash(command)
    existing = await repository.find_by_command_id(session, command.id)
    if existing is not None:
        return _replay(existing, digest)
    channel = await resolve_channel(session, command)
    refusal: Rejected | None = None
    decision = policy.Decision(proactive=False, lane=command.lane or "bulk", proactive_key=None)
    try:
        await check(session, settings, command, channel, now)
        decision = await policy.decide(
            session,
            command,
            channel,
            now,
            window_key=window_key(channel.id, channel.platform, command.to),
        )
    except Rejected as exc:
        if source == "api":
            raise
        refusal = exc
    values = {
        "id": uuid.uuid4(),
        "command_id": command.id,
        "request_hash": digest,
        "source": source,
        "channel_id": channel.id,
        "platform": channel.platform,
        "recipient": command.to,
        "conversation_key": conversation_key(channel.id, command.to),
        "content": command.content.model_dump(mode="json", exclude_none=True),
        "reply_to": command.reply_to,
        "message_metadata": dict(command.metadata),
        "state": "queued" if refusal is None else "failed",
        "next_attempt_at": now,
        "not_after": signal_not_after(
            command, now, now + timedelta(seconds=settings.outbox_default_ttl_seconds)
        ),
        "last_error": None,
        "finished_at": None,
        # The caller's span (API request, Kafka record), or the client's carried trace context
        "traceparent": telemetry.outgoing(),
        "lane": decision.lane,
        "proactive_key": decision.proactive_key,
    }
    error: LifecycleError | None = None
    if refusal is not None:
        error = LifecycleError(code=refusal.code, title=refusal.message, retryable=False)
        values["last_error"] = error.model_dump(mode="json")
        values["finished_at"] = now
    message = await repository.insert_message(session, values)
    if message is None:  # a concurrent request with the same id won the insert
        existing = await repository.find_by_command_id(session, command.id)
        if existing is None:  # pragma: no cover - the winner's row is committed and unique
            raise IdempotencyConflict(f"command id {command.id!r} is being accepted concurrently")
        return _replay(existing, digest)
    events.emit(
        session,
        settings,
        message,
        "message.queued" if refusal is None else "message.failed",
        error=error,
    )
    return Accepted(message, replayed=False)


# ---- operator actions (the messages API) --------------------------------------------------


CANCELLABLE = frozenset({"queued", "retrying"})


async def cancel(
    session: AsyncSession, settings: Settings, message_id: uuid.UUID, *, now: datetime | None = None
) -> OutboxMessage:
    """queued/retrying → cancelled with a ``message.cancelled`` event. Cancelling a cancelled
    message changes nothing (idempotent); any other state is ``InvalidState``: a message being
    sent (``sending``) may already be at the platform."""
    message = await repository.get_message(session, message_id, for_update=True)
    if message.state == "cancelled":
        return message
    if message.state not in CANCELLABLE:
        raise InvalidState(
            f"message is {message.state}: only a queued or retrying message can be cancelled",
            details={"state": message.state},
        )
    message.state = "cancelled"
    message.finished_at = now or datetime.now(UTC)
    message.lease_owner = None
    message.lease_expires_at = None
    events.emit(session, settings, message, "message.cancelled")
    await session.flush()
    await session.refresh(message)  # server-side updated_at
    return message


async def redrive(
    session: AsyncSession, settings: Settings, message_id: uuid.UUID, *, now: datetime | None = None
) -> OutboxMessage:
    """dead or failed → queued, due now, with a fresh ``not_after`` (now + the default TTL);
    attempts and their history are kept and the retry schedule starts again from its first
    step. Any other state is ``InvalidState``."""
    now = now or datetime.now(UTC)
    message = await repository.get_message(session, message_id, for_update=True)
    if message.state not in REDRIVABLE_STATES:
        raise InvalidState(
            f"message is {message.state}: only a dead or failed message can be retried",
            details={"state": message.state},
        )
    await _requeue(session, settings, message, now)
    await session.flush()
    await session.refresh(message)  # server-side updated_at
    return message


REDRIVE_BATCH = 500
"""Rows requeued per transaction by ``redrive_matching``: row locks and the staged events of
one batch stay small, and a concurrent redrive of the same filter skips locked rows."""


async def redrive_matching(
    sessionmaker: async_sessionmaker[AsyncSession],
    settings: Settings,
    where: RedriveFilter,
    limit: int,
    *,
    now: datetime | None = None,
) -> int:
    """``redrive`` every dead/failed message matching ``where``, at most ``limit``, in
    committed batches of ``REDRIVE_BATCH`` (oldest finished first). Returns the count."""
    now = now or datetime.now(UTC)
    done = 0
    while done < limit:
        batch = min(REDRIVE_BATCH, limit - done)
        async with sessionmaker() as session, session.begin():
            rows = await repository.lock_redrivable(session, where, batch)
            for message in rows:
                await _requeue(session, settings, message, now)
        done += len(rows)
        if len(rows) < batch:
            break
    return done


async def _requeue(
    session: AsyncSession, settings: Settings, message: OutboxMessage, now: datetime
) -> None:
    message.state = "queued"
    message.next_attempt_at = now
    message.retry_base = message.attempts
    message.not_after = now + timedelta(seconds=settings.outbox_default_ttl_seconds)
    message.finished_at = None
    message.lease_owner = None
    message.lease_expires_at = None
    events.emit(session, settings, message, "message.queued")
