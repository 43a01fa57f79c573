"""Channel control: whether the outbox sends on a channel (``sending``), and why.

``outbox_channel_control`` (owned by the outbox; no row means ``active``) holds either:

- ``paused``: an operator's hold (``POST /v1/channels/{id}/pause``), until ``resume``;
- ``suspended``: automatic after the platform refused the channel's credentials (Meta OAuth
  190, Telegram 401, Twilio 20003, HTTP 401: ``SendResult.credentials_invalid``). It holds
  only while the channel's encrypted secrets are the ones it was suspended with
  (``secrets_digest`` = md5 of ``channels.secrets``): a credentials update (``PATCH
  /v1/channels/{id}``) lifts it the moment it commits, without the channels package knowing
  about the outbox. The ``channel.resumed`` event of such a lift is emitted by the next
  maintenance round (``lift_replaced``); ``resume`` emits it at once.

A held channel is neither surveyed nor acquired nor claimed (``held``), so nothing is sent;
its messages wait. Their ``not_after`` still applies (``leases.sweep_expired`` runs on every
channel). Webhooks are untouched: the gateway looks at ``channels.enabled`` only.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncSession

from infra import cloudevents
from outbox.contracts import ChannelError, ChannelEventData, ChannelEventType
from outbox.models import OutboxEvent

__all__ = [
    "Suspension",
    "build_channel_event",
    "held",
    "lift_replaced",
    "pause",
    "record_circuits",
    "resume",
    "suspend",
]


def held(channel_column: str) -> str:
    """SQL: true when sending on ``channel_column``'s channel is held (paused or suspended)."""
    return f"""EXISTS (
        SELECT 1 FROM outbox_channel_control k JOIN channels kc ON kc.id = k.channel_id
        WHERE k.channel_id = {channel_column}
          AND (k.sending = 'paused'
               OR (k.sending = 'suspended' AND k.secrets_digest = md5(kc.secrets))))"""  # noqa: S608


@dataclass(frozen=True, slots=True)
class Suspension:
    """A refusal of the channel's credentials, seen on a send."""

    channel_id: uuid.UUID
    platform: str
    error: ChannelError


def build_channel_event(
    event_type: ChannelEventType,
    *,
    channel_id: uuid.UUID,
    platform: str,
    reason: str,
    error: ChannelError | None = None,
    now: datetime | None = None,
) -> bytes:
    """The CloudEvents JSON of a channel's sending change (subject: the channel id)."""
    data = ChannelEventData(
        channel_id=str(channel_id),
        platform=platform,
        sending="suspended" if event_type == "channel.suspended" else "active",
        reason=reason,
        error=error,
    )
    return cloudevents.encode(
        event_id=str(uuid.uuid4()),
        source=f"/switchboard/outbox/{channel_id}",
        event_type=event_type,
        time=now or datetime.now(UTC),
        subject=str(channel_id),
        data=data.model_dump(mode="json"),
    )


def _event_row(topic: str, channel_id: uuid.UUID, value: bytes) -> dict[str, Any]:
    return {"topic": topic, "key": str(channel_id), "value": value}


_PAUSE = text(
    """
    INSERT INTO outbox_channel_control AS k (channel_id, sending, reason, since)
    VALUES (:id, 'paused', :reason, now())
    ON CONFLICT (channel_id) DO UPDATE
      SET sending = 'paused', reason = EXCLUDED.reason, since = now(), error = NULL,
          secrets_digest = NULL
      WHERE k.sending <> 'paused'
    """
)

_RESUME = text(
    """
    WITH old AS (
        SELECT k.channel_id, k.sending, k.secrets_digest = md5(c.secrets) AS in_force, k.error
        FROM outbox_channel_control k JOIN channels c ON c.id = k.channel_id
        WHERE k.channel_id = :id AND k.sending <> 'active'
        FOR UPDATE OF k
    )
    UPDATE outbox_channel_control k
    SET sending = 'active', reason = 'resumed', since = now(), error = NULL,
        secrets_digest = NULL
    FROM old WHERE k.channel_id = old.channel_id
    RETURNING old.sending, old.in_force, old.error
    """
)

_SUSPEND = text(
    """
    INSERT INTO outbox_channel_control AS k (channel_id, sending, reason, since, error,
        secrets_digest)
    SELECT c.id, 'suspended', 'credentials_refused', now(), CAST(:error AS jsonb), md5(c.secrets)
    FROM channels c WHERE c.id = :id
    ON CONFLICT (channel_id) DO UPDATE
      SET sending = 'suspended', reason = EXCLUDED.reason, since = now(), error = EXCLUDED.error,
          secrets_digest = EXCLUDED.secrets_digest
      WHERE k.sending = 'active'
         OR (k.sending = 'suspended' AND k.secrets_digest IS DISTINCT FROM EXCLUDED.secrets_digest)
    RETURNING k.channel_id
    """
)

_LIFT_REPLACED = text(
    """
    UPDATE outbox_channel_control k
    SET sending = 'active', reason = 'credentials_updated', since = now(), error = NULL,
        secrets_digest = NULL
    FROM channels c
    WHERE c.id = k.channel_id AND k.sending = 'suspended'
      AND k.secrets_digest IS DISTINCT FROM md5(c.secrets)
    RETURNING k.channel_id, c.platform
    """
)

_CIRCUIT = text(
    """
    INSERT INTO outbox_channel_control AS k (channel_id, sending, reason, circuit, circuit_since)
    SELECT c.id, 'active', 'active', :state, now() FROM channels c WHERE c.id = :id
    ON CONFLICT (channel_id) DO UPDATE
      SET circuit = EXCLUDED.circuit, circuit_since = now()
      WHERE k.circuit <> EXCLUDED.circuit
    """
)


async def pause(session: AsyncSession, channel_id: uuid.UUID, reason: str) -> None:
    """Hold sending on the channel (idempotent: a second pause keeps the first's ``since``).
    A suspension becomes a pause: the operator's hold wins, and is lifted only by resume."""
    await session.execute(_PAUSE, {"id": channel_id, "reason": reason})


async def resume(session: AsyncSession, channel_id: uuid.UUID, platform: str, topic: str) -> bool:
    """Lift a pause or a suspension; a suspension in force emits ``channel.resumed``.
    Returns whether anything was held."""
    row = (await session.execute(_RESUME, {"id": channel_id})).first()
    if row is None:
        return False
    sending, in_force, _error = row
    if sending == "suspended":
        value = build_channel_event(
            "channel.resumed",
            channel_id=channel_id,
            platform=platform,
            reason="resumed" if in_force else "credentials_updated",
        )
        await session.execute(insert(OutboxEvent), [_event_row(topic, channel_id, value)])
    return bool(sending == "paused" or in_force)


async def suspend(session: AsyncSession, suspensions: list[Suspension], topic: str) -> int:
    """Suspend each channel with its secrets as they are now; emits ``channel.suspended`` for
    each channel newly suspended (not for one already suspended or paused). Returns that
    count."""
    events = []
    for s in suspensions:
        error = orjson.dumps(s.error.model_dump(mode="json")).decode()
        changed = await session.scalar(_SUSPEND, {"id": s.channel_id, "error": error})
        if changed is None:
            continue
        value = build_channel_event(
            "channel.suspended",
            channel_id=s.channel_id,
            platform=s.platform,
            reason="credentials_refused",
            error=s.error,
        )
        events.append(_event_row(topic, s.channel_id, value))
    if events:
        await session.execute(insert(OutboxEvent), events)
    return len(events)


async def lift_replaced(session: AsyncSession, topic: str) -> int:
    """Drop suspensions whose channel got new credentials since, with ``channel.resumed``
    (sending already resumed at the update: ``held`` compares the digest)."""
    rows = (await session.execute(_LIFT_REPLACED)).all()
    events = [
        _event_row(
            topic,
            channel_id,
            build_channel_event(
                "channel.resumed",
                channel_id=channel_id,
                platform=platform,
                reason="credentials_updated",
            ),
        )
        for channel_id, platform in rows
    ]
    if events:
        await session.execute(insert(OutboxEvent), events)
    return len(events)


async def record_circuits(session: AsyncSession, circuits: dict[uuid.UUID, str]) -> None:
    """Persist the owner's circuit-breaker states (shown on the channel resource and counted
    by the sampler)."""
    for channel_id, state in circuits.items():
        await session.execute(_CIRCUIT, {"id": channel_id, "state": state})
