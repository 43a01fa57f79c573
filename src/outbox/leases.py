"""PostgreSQL leases: channel ownership (one sender per channel across replicas) and message
claims. Every time in these statements is the database's ``now()``: one clock for all workers.

Channel ownership (``outbox_channel_leases``): a worker takes a channel when its lease is free
or expired, renews it while it has work, and releases it on shutdown or when idle. A released
lease stays closed for ``handover_gap`` seconds, so a new owner's pacer (which starts empty)
never adds a full window of sends on top of the previous owner's last second. A dead owner's
channel is taken over when its lease expires. Workers heartbeat in ``outbox_workers``; each
holds about its fair share of the active channels (``outbox.delivery.plan_ownership``), so
replicas add throughput instead of idling behind the first one.

Message claims: only the head of each conversation (no pending message with a smaller
``seq``), signals first, then the reply lane, then by due time (``outbox.lanes``: a reply
never waits for a channel's bulk backlog to be claimed), ``FOR UPDATE SKIP LOCKED``, moved to
``sending`` with a lease that outlives the HTTP timeout, so a slow send is never duplicated by
another worker.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from outbox.contracts import SIGNAL_KINDS
from outbox.control import held
from outbox.delivery import ChannelView

__all__ = [
    "ChannelGrant",
    "ChannelView",
    "RowUpdate",
    "acquire_channels",
    "apply_outcomes",
    "claim_messages",
    "heartbeat",
    "recover_expired",
    "release_channels",
    "retire",
    "survey_channels",
    "sweep_expired",
    "throttle_channels",
]

_HEARTBEAT = text(
    """
    WITH beat AS (
        INSERT INTO outbox_workers AS w (owner, expires_at)
        VALUES (:owner, now() + CAST(:ttl AS float8) * interval '1 second')
        ON CONFLICT (owner) DO UPDATE SET expires_at = EXCLUDED.expires_at
        RETURNING w.owner
    ),
    gone AS (
        DELETE FROM outbox_workers WHERE expires_at < now() - interval '1 day' RETURNING owner
    )
    SELECT 1 + count(*) FROM outbox_workers WHERE expires_at > now() AND owner <> :owner
    """
)

_RETIRE = text("DELETE FROM outbox_workers WHERE owner = :owner")

_SURVEY = text(
    f"""
    WITH due AS (
        SELECT m.channel_id, min(m.next_attempt_at) AS since
        FROM outbox_messages m JOIN channels c ON c.id = m.channel_id AND c.enabled
        WHERE m.state IN ('queued', 'retrying') AND NOT {held("c.id")}
          AND m.next_attempt_at <= now() + CAST(:horizon AS float8) * interval '1 second'
        GROUP BY m.channel_id
    )
    SELECT d.channel_id, true AS due,
        d.since < now() - CAST(:grace AS float8) * interval '1 second' AS overdue,
        CASE WHEN l.expires_at > now() THEN l.owner END AS holder
    FROM due d LEFT JOIN outbox_channel_leases l ON l.channel_id = d.channel_id
    UNION ALL
    SELECT l.channel_id, false, false, l.owner
    FROM outbox_channel_leases l
    WHERE l.expires_at > now()
      AND NOT EXISTS (SELECT 1 FROM due WHERE due.channel_id = l.channel_id)
    """  # noqa: S608 - constant fragments (outbox.control.held), no input
)

_ACQUIRE = text(
    f"""
    INSERT INTO outbox_channel_leases AS l (channel_id, owner, expires_at)
    SELECT c.id, :owner, now() + CAST(:ttl AS float8) * interval '1 second'
    FROM channels c
    WHERE c.id = ANY(CAST(:ids AS uuid[])) AND c.enabled AND NOT {held("c.id")}
    ON CONFLICT (channel_id) DO UPDATE
      SET owner = EXCLUDED.owner, expires_at = EXCLUDED.expires_at
      WHERE l.owner = EXCLUDED.owner OR l.expires_at < now()
    RETURNING l.channel_id, l.throttled_until, now() AS db_now
    """  # noqa: S608 - constant fragments (outbox.control.held), no input
)

_RELEASE = text(
    """
    UPDATE outbox_channel_leases
    SET expires_at = clock_timestamp() + CAST(:gap AS float8) * interval '1 second'
    WHERE owner = :owner AND channel_id = ANY(CAST(:ids AS uuid[])) AND expires_at > now()
    """
)

_THROTTLE = text(
    """
    UPDATE outbox_channel_leases
    SET throttled_until = GREATEST(
        COALESCE(throttled_until, now()), now() + CAST(:pause AS float8) * interval '1 second')
    WHERE channel_id = :channel_id
    """
)


_CLAIM = text(
    f"""
    WITH want AS (
        SELECT * FROM unnest(CAST(:channel_ids AS uuid[]), CAST(:limits AS int[]))
            AS w(channel_id, n)
        WHERE NOT {held("w.channel_id")}
    ),
    picked AS (
        SELECT p.id, p.state
        FROM want CROSS JOIN LATERAL (
            SELECT m.id, m.state
            FROM outbox_messages m
            WHERE m.channel_id = want.channel_id
              AND m.state IN ('queued', 'retrying')
              AND m.next_attempt_at <= now()
              AND (m.content->>'kind' = ANY(CAST(:signals AS text[]))
                   OR NOT EXISTS (
                  SELECT 1 FROM outbox_messages e
                  WHERE e.conversation_key = m.conversation_key
                    AND e.seq < m.seq
                    AND e.state IN ('queued', 'sending', 'retrying')
                    AND e.content->>'kind' <> ALL(CAST(:signals AS text[]))))
            ORDER BY (m.content->>'kind' = ANY(CAST(:signals AS text[]))) DESC,
                (m.lane = 'reply') DESC,
                m.next_attempt_at
            LIMIT want.n
            FOR UPDATE OF m SKIP LOCKED
        ) p
    )
    UPDATE outbox_messages o
    SET state = 'sending', lease_owner = :owner,
        lease_expires_at = now() + CAST(:lease AS float8) * interval '1 second',
        updated_at = now()
    FROM picked
    WHERE o.id = picked.id
    RETURNING o.id, o.seq, o.command_id, o.channel_id, o.platform, o.recipient,
        o.conversation_key, o.content, o.reply_to, o.metadata, o.attempts, o.retry_base,
        o.not_after,
        o.platform_message_id, o.traceparent, o.lane, picked.state AS claimed_from
    """  # noqa: S608 - constant fragments (outbox.control.held), no input
)


_RECOVER = text(
    """
    WITH lost AS (
        SELECT id FROM outbox_messages
        WHERE state = 'sending' AND lease_expires_at < now()
        ORDER BY lease_expires_at
        LIMIT :n
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox_messages o
    SET attempts = o.attempts + 1,
        state = CASE WHEN o.not_after <= now() THEN 'dead' ELSE 'retrying' END,
        finished_at = CASE WHEN o.not_after <= now() THEN now() ELSE o.finished_at END,
        next_attempt_at = now(),
        lease_owner = NULL, lease_expires_at = NULL,
        last_error = CAST(:error AS jsonb),
        updated_at = now()
    FROM lost
    WHERE o.id = lost.id
    RETURNING o.id, o.seq, o.command_id, o.channel_id, o.platform, o.recipient,
        o.conversation_key, o.content, o.reply_to, o.metadata, o.attempts, o.retry_base,
        o.not_after,
        o.platform_message_id, o.traceparent, o.state AS claimed_from, o.state
    """
)

_SWEEP = text(
    """
    WITH gone AS (
        SELECT id FROM outbox_messages
        WHERE state IN ('queued', 'retrying') AND next_attempt_at <= now() AND not_after <= now()
        LIMIT :n
        FOR UPDATE SKIP LOCKED
    )
    UPDATE outbox_messages o
    SET state = 'dead', finished_at = now(), last_error = CAST(:error AS jsonb),
        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    FROM gone
    WHERE o.id = gone.id
    RETURNING o.id, o.seq, o.command_id, o.channel_id, o.platform, o.recipient,
        o.conversation_key, o.content, o.reply_to, o.metadata, o.attempts, o.retry_base,
        o.not_after,
        o.platform_message_id, o.traceparent, o.state AS claimed_from, o.state
    """
)


@dataclass(frozen=True, slots=True)
class ChannelGrant:
    channel_id: uuid.UUID
    throttled_for: float
    """Seconds a previous throttle (``throttled_until``) still holds, 0 if none."""


async def heartbeat(session: AsyncSession, owner: str, ttl: float) -> int:
    """Say this worker is alive for ``ttl`` seconds; returns the number of live workers
    (this one included). Rows of workers dead for a day are deleted on the way."""
    live = await session.scalar(_HEARTBEAT, {"owner": owner, "ttl": ttl})
    return int(live or 1)


async def retire(session: AsyncSession, owner: str) -> None:
    """This worker stops: the others' fair share grows at their next renew."""
    await session.execute(_RETIRE, {"owner": owner})


async def survey_channels(session: AsyncSession, horizon: float, grace: float) -> list[ChannelView]:
    """Every active channel: enabled ones with messages due within ``horizon`` seconds, and
    those somebody holds a live lease on (including a release's handover gap)."""
    result = await session.execute(_SURVEY, {"horizon": horizon, "grace": grace})
    return [ChannelView(cid, due, overdue, holder) for cid, due, overdue, holder in result.all()]


async def acquire_channels(
    session: AsyncSession, owner: str, ids: Sequence[uuid.UUID], ttl: float
) -> list[ChannelGrant]:
    """Take or renew the leases of ``ids`` (enabled channels only); returns those now ours."""
    if not ids:
        return []
    result = await session.execute(_ACQUIRE, {"owner": owner, "ids": list(ids), "ttl": ttl})
    grants = []
    for channel_id, throttled_until, db_now in result.all():
        remaining = 0.0
        if isinstance(throttled_until, datetime) and throttled_until > db_now:
            remaining = (throttled_until - db_now).total_seconds()
        grants.append(ChannelGrant(channel_id, remaining))
    return grants


async def release_channels(
    session: AsyncSession, owner: str, ids: Sequence[uuid.UUID], gap: float
) -> None:
    """Give up ``ids``: nobody takes them for ``gap`` seconds from *this statement* (not from
    the transaction's start, which may be long before: the caller must have stopped sending
    on them before it runs)."""
    if ids:
        await session.execute(_RELEASE, {"owner": owner, "ids": list(ids), "gap": gap})


async def throttle_channels(session: AsyncSession, pauses: dict[uuid.UUID, float]) -> None:
    """Persist a platform throttle on the lease, so whoever owns the channel next honours it."""
    for channel_id, pause in pauses.items():
        await session.execute(_THROTTLE, {"channel_id": channel_id, "pause": pause})


async def claim_messages(
    session: AsyncSession,
    owner: str,
    budgets: dict[uuid.UUID, int],
    lease: float,
) -> list[dict[str, Any]]:
    """Claim due conversation heads of the given channels, at most ``budgets[channel]`` each."""
    if not budgets:
        return []
    result = await session.execute(
        _CLAIM,
        {
            "channel_ids": list(budgets),
            "limits": list(budgets.values()),
            "owner": owner,
            "lease": lease,
            "signals": sorted(SIGNAL_KINDS),
        },
    )
    return [dict(row) for row in result.mappings()]


async def recover_expired(session: AsyncSession, error_json: str, n: int) -> list[dict[str, Any]]:
    """``sending`` rows whose lease expired (their worker died) → retrying (or dead past
    ``not_after``), due now, the lost attempt counted."""
    result = await session.execute(_RECOVER, {"n": n, "error": error_json})
    return [dict(row) for row in result.mappings()]


async def sweep_expired(session: AsyncSession, error_json: str, n: int) -> list[dict[str, Any]]:
    """Waiting rows past ``not_after`` (of any channel, owned or not) → dead."""
    result = await session.execute(_SWEEP, {"n": n, "error": error_json})
    return [dict(row) for row in result.mappings()]


_APPLY = text(
    """
    UPDATE outbox_messages o
    SET state = v.state,
        attempts = v.attempts,
        next_attempt_at = COALESCE(v.next_attempt_at, o.next_attempt_at),
        platform_message_id = COALESCE(v.platform_message_id, o.platform_message_id),
        last_error = COALESCE(CAST(v.last_error AS jsonb), o.last_error),
        sent_at = COALESCE(v.sent_at, o.sent_at),
        finished_at = COALESCE(v.finished_at, o.finished_at),
        lease_owner = NULL, lease_expires_at = NULL, updated_at = now()
    FROM unnest(
        CAST(:ids AS uuid[]), CAST(:states AS text[]), CAST(:attempts AS int[]),
        CAST(:nexts AS timestamptz[]), CAST(:pmids AS text[]), CAST(:errors AS text[]),
        CAST(:sent AS timestamptz[]), CAST(:finished AS timestamptz[])
    ) AS v(id, state, attempts, next_attempt_at, platform_message_id, last_error, sent_at,
           finished_at)
    WHERE o.id = v.id AND o.state = 'sending' AND o.lease_owner = :owner
    RETURNING o.id
    """
)


@dataclass(slots=True)
class RowUpdate:
    """The new values of one claimed row (None keeps the current value)."""

    id: uuid.UUID
    state: str
    attempts: int
    next_attempt_at: datetime | None = None
    platform_message_id: str | None = None
    last_error: str | None = None
    """JSON text."""
    sent_at: datetime | None = None
    finished_at: datetime | None = None


async def apply_outcomes(
    session: AsyncSession, owner: str, updates: Sequence[RowUpdate]
) -> set[uuid.UUID]:
    """Write many outcomes in one statement; only rows still claimed by ``owner`` change (a
    row whose lease expired was already recovered by someone else). Returns the changed ids."""
    if not updates:
        return set()
    result = await session.scalars(
        _APPLY,
        {
            "owner": owner,
            "ids": [u.id for u in updates],
            "states": [u.state for u in updates],
            "attempts": [u.attempts for u in updates],
            "nexts": [u.next_attempt_at for u in updates],
            "pmids": [u.platform_message_id for u in updates],
            "errors": [u.last_error for u in updates],
            "sent": [u.sent_at for u in updates],
            "finished": [u.finished_at for u in updates],
        },
    )
    return set(result)
