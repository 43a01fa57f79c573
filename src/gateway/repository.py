"""SQL of the gateway, on raw asyncpg connections (the hot path skips the ORM).

``claim_batch`` is the only statement a batch of concurrent webhooks costs (group commit, see
``gateway.service``): in one round trip it records the batch's event ids for dedup
(``INSERT … ON CONFLICT DO NOTHING RETURNING``, ids inserted in sorted order so concurrent
batches of several replicas lock overlapping ids in the same order), archives the raw body of
every webhook that owns a new id, and reports which of the batch's conversations still have
events waiting in the spool (those must go through the spool too, to keep per-conversation
order).

Every value a webhook brings into a bounded column is fitted to it before the claim
(``archive_row``): one statement carries the whole batch, so a value that PostgreSQL refuses
(a 300-character ``Content-Type`` in ``varchar(255)``, a NUL in ``jsonb``) would fail the
claim for every member and send them all down the "PostgreSQL down" path without dedup.
Event ids are uuid5 and conversation ids are refused with a NUL at intake
(``gateway.intake``); the spool's other columns come from the gateway itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg  # type: ignore[import-untyped]
import orjson
from sqlalchemy import String

from gateway.models import ArchivedWebhook

_CLAIM_BATCH = """
WITH new AS (
    INSERT INTO gateway_dedup (event_id)
    SELECT id FROM unnest($1::uuid[]) AS t(id) ORDER BY id
    ON CONFLICT (event_id) DO NOTHING
    RETURNING event_id
), winners AS (
    SELECT DISTINCT o.member
    FROM unnest($1::uuid[], $2::int[]) AS o(id, member)
    JOIN new ON new.event_id = o.id
), archived AS (
    INSERT INTO gateway_archive
        (channel_id, platform, account_id, content_type, headers, body, event_count)
    SELECT a.channel_id, a.platform, a.account_id, a.content_type, a.headers::jsonb, a.body,
           a.event_count
    FROM unnest($3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bytea[],
                $9::int[])
         WITH ORDINALITY AS a(channel_id, platform, account_id, content_type, headers, body,
                              event_count, n)
    WHERE a.n - 1 IN (SELECT member FROM winners)
    ORDER BY a.n
)
SELECT
    (SELECT coalesce(array_agg(event_id::text), '{}') FROM new) AS new_ids,
    (SELECT coalesce(array_agg(DISTINCT conversation_id), '{}')
       FROM gateway_spool WHERE conversation_id = ANY($10::text[])) AS spooled
"""

_SPOOL = """
INSERT INTO gateway_spool (event_id, platform, topic, conversation_id, value, traceparent)
SELECT e, p, t, c, v, tp
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bytea[], $6::text[])
     WITH ORDINALITY AS x(e, p, t, c, v, tp, n)
ORDER BY n
"""

MAINTENANCE_TIMEOUT = 60.0
"""Seconds for statements off the hot path (purge, replay's reads): the pool's command timeout
is the gateway's database timeout, sized for the hot path's single-row-per-event statements."""

RELAY_LOCK_KEY = 0x5B_6761_7465  # pg advisory lock id of the spool relay ("[gate")


@dataclass(frozen=True, slots=True)
class Claim:
    new_ids: frozenset[str]
    spooled_conversations: frozenset[str]


@dataclass(frozen=True, slots=True)
class ArchiveRow:
    channel_id: uuid.UUID
    platform: str
    account_id: str
    content_type: str | None
    headers: dict[str, str]
    body: bytes
    event_count: int


def _length(column: str) -> int:
    type_ = ArchivedWebhook.__table__.c[column].type
    assert isinstance(type_, String)
    assert type_.length is not None
    return type_.length


CONTENT_TYPE_MAX = _length("content_type")
ACCOUNT_ID_MAX = _length("account_id")


def fit_content_type(content_type: str | None) -> str | None:
    """The header as sent when it fits its column, else its media type alone (what the
    normalizer and replay read); the parameters of an over-long header are dropped."""
    if content_type is None or len(content_type) <= CONTENT_TYPE_MAX:
        return content_type
    return content_type.split(";", 1)[0].strip()[:CONTENT_TYPE_MAX]


def archive_row(
    *,
    channel_id: uuid.UUID,
    platform: str,
    account_id: str,
    content_type: str | None,
    headers: dict[str, str],
    body: bytes,
    event_count: int,
) -> ArchiveRow:
    """An archive row whose every value fits its column (see the module docstring)."""
    return ArchiveRow(
        channel_id,
        platform,
        account_id[:ACCOUNT_ID_MAX],
        fit_content_type(content_type),
        {k.replace("\x00", "\ufffd"): v.replace("\x00", "\ufffd") for k, v in headers.items()},
        body,
        event_count,
    )


@dataclass(frozen=True, slots=True)
class SpoolRow:
    event_id: str
    platform: str
    topic: str
    conversation_id: str
    value: bytes
    traceparent: str | None = None
    """A valid W3C ``traceparent`` (55 characters, from ``infra.telemetry``) or None."""


async def claim_batch(
    conn: asyncpg.Connection,
    *,
    owners: dict[str, int],
    archive: Sequence[ArchiveRow],
    conversations: Sequence[str],
    wait_s: float,
) -> Claim:
    """Claim the ids of a batch of webhooks in one statement.

    ``owners`` maps each event id to the index (in ``archive``) of the first webhook of the
    batch that carries it; ``archive`` has one row per webhook, written only for webhooks that
    own at least one id that is new. ``wait_s`` must exceed a concurrent batch's publish:
    an id it claimed stays row-locked until it commits.
    """
    event_ids = sorted(owners)
    row = await conn.fetchrow(
        _CLAIM_BATCH,
        event_ids,
        [owners[e] for e in event_ids],
        [a.channel_id for a in archive],
        [a.platform for a in archive],
        [a.account_id for a in archive],
        [a.content_type for a in archive],
        [orjson.dumps(a.headers).decode() for a in archive],
        [a.body for a in archive],
        [a.event_count for a in archive],
        sorted(set(conversations)),
        timeout=wait_s,
    )
    assert row is not None
    return Claim(frozenset(row["new_ids"]), frozenset(row["spooled"]))


async def spool_durably(conn: asyncpg.Connection, rows: Sequence[SpoolRow]) -> None:
    """Spool rows, and make this transaction's COMMIT wait for the WAL flush."""
    await conn.execute("SET LOCAL synchronous_commit TO on")
    await spool(conn, rows)


async def spool(conn: asyncpg.Connection, rows: Sequence[SpoolRow]) -> None:
    await conn.execute(
        _SPOOL,
        [r.event_id for r in rows],
        [r.platform for r in rows],
        [r.topic for r in rows],
        [r.conversation_id for r in rows],
        [r.value for r in rows],
        [r.traceparent for r in rows],
    )


async def try_relay_lock(conn: asyncpg.Connection) -> bool:
    """Transaction-scoped: only one relay (across all replicas) drains the spool at a time."""
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", RELAY_LOCK_KEY))


async def oldest_spooled(conn: asyncpg.Connection, limit: int) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT seq, platform, topic, conversation_id, value, traceparent FROM gateway_spool "
            "ORDER BY seq LIMIT $1",
            limit,
        )
    )


async def delete_spooled(conn: asyncpg.Connection, seqs: Sequence[int]) -> None:
    await conn.execute("DELETE FROM gateway_spool WHERE seq = ANY($1::bigint[])", list(seqs))


async def purge(conn: asyncpg.Connection, table: str, column: str, before: datetime) -> int:
    """Delete rows older than ``before`` in bounded batches (short locks); return the count."""
    assert (table, column) in {("gateway_dedup", "seen_at"), ("gateway_archive", "received_at")}
    total = 0
    while True:
        status = await conn.execute(
            f"DELETE FROM {table} WHERE ctid IN "  # noqa: S608 - fixed identifiers
            f"(SELECT ctid FROM {table} WHERE {column} < $1 LIMIT 10000)",
            before,
            timeout=MAINTENANCE_TIMEOUT,
        )
        count = int(status.rsplit(" ", 1)[-1])
        total += count
        if count < 10000:
            return total


async def archived(
    conn: asyncpg.Connection,
    *,
    channel_id: uuid.UUID | None,
    platform: str | None,
    since: datetime | None,
    until: datetime | None,
    after_id: int,
    limit: int,
) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT id, channel_id, platform, account_id, received_at, content_type, body "
            "FROM gateway_archive WHERE id > $1 "
            "AND ($2::uuid IS NULL OR channel_id = $2) "
            "AND ($3::text IS NULL OR platform = $3) "
            "AND ($4::timestamptz IS NULL OR received_at >= $4) "
            "AND ($5::timestamptz IS NULL OR received_at < $5) "
            "ORDER BY id LIMIT $6",
            after_id,
            channel_id,
            platform,
            since,
            until,
            limit,
            timeout=MAINTENANCE_TIMEOUT,
        )
    )
