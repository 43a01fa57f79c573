"""Contact policy at intake: opt-outs, frequency caps and the default lane (issue 13).

A command is **proactive** (business-initiated) when it is a template, or when no customer
message on this channel arrived within ``REPLY_WINDOW`` of now (``outbox_conversation_windows``,
fed by the receipts consumer from ``inbound.v1`` for every platform). Typing indicators and read
marks are never proactive. Everything else is a **reply** inside an open customer-initiated
conversation.

* **Opt-out**: a proactive command to a contact in ``conv_opt_outs`` is refused (``opted_out``).
  A reply is not, except on SMS (Twilio, not a ``whatsapp:`` address): carriers require STOP to
  stop everything and Twilio itself refuses with 21610 until START, so refusing at intake saves a
  doomed attempt. On WhatsApp, Messenger, Instagram and Telegram a customer who writes after an
  opt-out still gets answers (a WhatsApp marketing opt-out does not block service replies).
* **Frequency cap** (``outbox_frequency_caps``, per channel): at most ``max_messages`` accepted
  proactive messages per contact per rolling ``period_seconds``; one more is refused
  (``frequency_capped``) with the instant it would be allowed. Replies never count; refused,
  cancelled, failed and dead messages do not either. Race-safe across replicas: the count and
  the insert run in one transaction under a per-contact advisory transaction lock.
* **Lane**: ``reply`` for replies and automatic messages (``metadata.switchboard.automatic``),
  ``bulk`` for proactive ones, unless the command names one.

``conv_opt_outs`` belongs to the conversation layer (``conversations.models.OptOut``): the two
packages never import each other, so this module reads that table through its own read-only
Core ``table()`` (no model, not in the outbox's metadata, never written here). Its contact key
is ``channels.addressing.contact_key``, the one rule both layers use.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Uuid, column, exists, select, table, text
from sqlalchemy.ext.asyncio import AsyncSession

from channels.addressing import addressing, contact_key
from channels.models import Channel
from outbox.contracts import SIGNAL_KINDS, Lane, SendCommand
from outbox.errors import FrequencyCapped, OptedOut
from outbox.models import ConversationWindow, FrequencyCap

__all__ = [
    "REPLY_WINDOW",
    "Decision",
    "contact_key",
    "decide",
    "is_automatic",
]

REPLY_WINDOW = timedelta(hours=24)
"""A conversation is open (customer-initiated) for 24 h after the customer's last message, on
every platform: WhatsApp's service window and Meta's standard messaging window; Telegram and
SMS have no platform window, the same span keeps one rule."""

_CAP_LOCK_NAMESPACE = 0x6F626678
"""First key of ``pg_advisory_xact_lock(int, int)`` for frequency-cap locks, so they never
collide with other advisory locks of the database."""

_OPT_OUTS = table(
    "conv_opt_outs",
    column("channel_id", Uuid),
    column("contact_key"),
)
"""The conversation layer's opt-out table, read only (see the module docstring)."""


def is_automatic(metadata: dict[str, Any]) -> bool:
    marker = metadata.get("switchboard")
    return isinstance(marker, dict) and marker.get("automatic") is True


def is_sms(platform: str, to: str, account_id: str) -> bool:
    return addressing(platform).is_sms(to, account_id)


@dataclass(frozen=True, slots=True)
class Decision:
    proactive: bool
    lane: Lane
    proactive_key: str | None
    """Set for an accepted proactive message: what the frequency cap counts."""


async def _window_open(session: AsyncSession, window_key: str, now: datetime) -> bool:
    window = await session.get(ConversationWindow, window_key)
    return window is not None and window.last_inbound_at >= now - REPLY_WINDOW


async def _opted_out(session: AsyncSession, channel: Channel, to: str) -> bool:
    key = contact_key(channel.platform, to)
    found = await session.scalar(
        select(exists().where(_OPT_OUTS.c.channel_id == channel.id, _OPT_OUTS.c.contact_key == key))
    )
    return bool(found)


_COUNT = text(
    """
    SELECT created_at FROM outbox_messages
    WHERE proactive_key = :key AND created_at > :since
      AND state NOT IN ('failed', 'dead', 'cancelled')
    ORDER BY created_at DESC
    LIMIT :n
    """
)


async def _check_cap(session: AsyncSession, channel_id: uuid.UUID, key: str, now: datetime) -> None:
    cap = await session.get(FrequencyCap, channel_id)
    if cap is None:
        return
    await session.execute(
        text("SELECT pg_advisory_xact_lock(:ns, hashtext(:key))"),
        {"ns": _CAP_LOCK_NAMESPACE, "key": key},
    )
    period = timedelta(seconds=cap.period_seconds)
    recent = list(
        await session.scalars(_COUNT, {"key": key, "since": now - period, "n": cap.max_messages})
    )
    if len(recent) < cap.max_messages:
        return
    allowed_at = (recent[-1] + period).astimezone(UTC)
    raise FrequencyCapped(
        f"at most {cap.max_messages} proactive messages per {cap.period_seconds} s to this "
        f"contact on this channel: the next one is allowed at {allowed_at.isoformat()}",
        details={
            "allowed_at": allowed_at.isoformat(),
            "max_messages": cap.max_messages,
            "period_seconds": cap.period_seconds,
        },
    )


async def decide(
    session: AsyncSession,
    command: SendCommand,
    channel: Channel,
    now: datetime,
    *,
    window_key: str,
) -> Decision:
    """Classify the command; raise ``OptedOut`` or ``FrequencyCapped`` if it must be refused.
    Runs in the intake's transaction (the cap's advisory lock lasts until its commit)."""
    kind = command.content.kind
    if kind in SIGNAL_KINDS:
        proactive = False
    elif kind == "template":
        proactive = True
    else:
        proactive = not await _window_open(session, window_key, now)
    if (proactive or is_sms(channel.platform, command.to, channel.account_id)) and (
        await _opted_out(session, channel, command.to)
    ):
        raise OptedOut(
            "the contact opted out of messages on this channel"
            + (" (SMS: nothing is sent until the contact opts in again)" if not proactive else "")
        )
    if proactive:
        await _check_cap(session, channel.id, window_key, now)
    lane: Lane = command.lane or (
        "reply" if not proactive or is_automatic(command.metadata) else "bulk"
    )
    return Decision(proactive, lane, window_key if proactive else None)
