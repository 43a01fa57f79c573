"""Retention: table sizes before and after a purge, and whether freed space is reused.

    .venv/bin/python bench/retention.py [--messages 100000] [--days 60] [--retention-days 30]

Real PostgreSQL (``SWITCHBOARD_BENCH_DATABASE_URL``, a server URL: a fresh database is created
on it and dropped after; otherwise an embedded server in a temporary directory).

1. ``messages`` outbox messages created evenly over the last ``days`` days (mostly delivered or
   read, some sent, failed, dead, cancelled, and a few still queued or retrying at every age),
   each with 1-2 attempts and 3 published lifecycle events, plus expired pending receipts.
2. One retention run (``outbox.retention.purge_once``, default batch size): rows and sizes of
   every table before and after, time taken, rows deleted per second.
3. ``VACUUM`` (what autovacuum does), then as many new messages as were deleted: the tables
   should not grow (the freed space is reused), which is what keeps them bounded.
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like a module it measures: keep its folder off the import path.
if str(Path(__file__).resolve().parent) in sys.path:
    sys.path.remove(str(Path(__file__).resolve().parent))
if str(Path(__file__).resolve().parent.parent) not in sys.path:  # for bench._stack
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import argparse
import asyncio
import time

from bench._stack import database
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine

from infra.settings import Settings
from outbox.retention import purge_once

TABLES = ("outbox_messages", "outbox_attempts", "outbox_events", "outbox_pending_receipts")


# Ages: uniform over `days`; states by n % 200 (85 % delivered, 5 % read, 4 % sent, 3 % failed,
# 2 % dead, 0.5 % cancelled, 0.5 % queued/retrying: pending rows at every age, never purged).
_MESSAGES = """
INSERT INTO outbox_messages (id, command_id, request_hash, source, channel_id, platform,
    recipient, conversation_key, content, metadata, state, attempts, next_attempt_at, not_after,
    platform_message_id, created_at, updated_at, sent_at, finished_at)
SELECT gen_random_uuid(), CAST(:tag AS text) || n, repeat('0', 64), 'api',
    CAST(:channel AS uuid), 'whatsapp', '39333' || n, CAST(:channel AS text) || '-39333' || n,
    jsonb_build_object('kind', 'text', 'text', repeat('hello there ', 12)),
    jsonb_build_object('order', n, 'customer', 'c' || (n % 977)),
    CASE WHEN n % 200 < 170 THEN 'delivered' WHEN n % 200 < 180 THEN 'read'
         WHEN n % 200 < 188 THEN 'sent' WHEN n % 200 < 194 THEN 'failed'
         WHEN n % 200 < 198 THEN 'dead' WHEN n % 200 = 198 THEN 'cancelled'
         ELSE (CASE WHEN n % 400 = 199 THEN 'queued' ELSE 'retrying' END) END,
    1 + n % 2, t, t + interval '1 day', 'wamid.HBgL' || md5(n::text), t, t, t, t
FROM generate_series(1, :count) AS n,
    LATERAL (SELECT now() - CAST(:days AS float8) * ((n * 7919) % 100003) / 100003.0
                    * interval '1 day' AS t) AS at
"""
_ATTEMPTS = """
INSERT INTO outbox_attempts (message_id, attempt, worker, started_at, duration_ms, outcome,
    http_status, response_excerpt)
SELECT m.id, a, 'host:1234:abcd', m.created_at, 120.5, 'sent', 200,
    '{"messaging_product":"whatsapp","contacts":[{"input":"' || m.recipient
    || '"}],"messages":[{"id":"' || m.platform_message_id || '"}]}'
FROM outbox_messages m, generate_series(1, 2) AS a
WHERE m.command_id LIKE CAST(:tag AS text) || '%' AND a <= m.attempts
"""
_EVENTS = """
INSERT INTO outbox_events (topic, key, value, created_at, published_at)
SELECT 'switchboard.outbound.events.v1', m.conversation_key,
    convert_to(repeat('{"specversion":"1.0","type":"message.sent","data":{}}', 10), 'UTF8'),
    m.created_at, m.created_at
FROM outbox_messages m, generate_series(1, 3)
WHERE m.command_id LIKE CAST(:tag AS text) || '%'
"""
_RECEIPTS = """
INSERT INTO outbox_pending_receipts (channel_id, platform_message_id, state, expires_at)
SELECT CAST(:channel AS uuid), 'wamid.' || n, 'read', now() - interval '1 hour'
FROM generate_series(1, CAST(:count AS int) / 100) AS n
"""


async def populate(conn: AsyncConnection, channel: str, count: int, days: float, tag: str) -> None:
    params = {"channel": channel, "count": count, "days": days, "tag": tag}
    for statement in (_MESSAGES, _ATTEMPTS, _EVENTS):
        used = {k: v for k, v in params.items() if f":{k}" in statement}
        await conn.execute(text(statement), used)


async def sizes(conn: AsyncConnection) -> dict[str, tuple[int, int]]:
    """rows and total bytes (heap, indexes, TOAST) per table."""
    out = {}
    for table in TABLES:
        rows = await conn.scalar(text(f"SELECT count(*) FROM {table}"))  # noqa: S608 - fixed names
        size = await conn.scalar(text("SELECT pg_total_relation_size(:t)"), {"t": table})
        out[table] = (int(rows or 0), int(size or 0))
    return out


def show(title: str, figures: dict[str, tuple[int, int]]) -> None:
    print(f"\n{title}")
    for table, (rows, size) in figures.items():
        print(f"  {table:<26} {rows:>10,} rows  {size / 2**20:>9.1f} MiB")
    total = sum(size for _, size in figures.values())
    print(f"  {'total':<26} {'':>15}  {total / 2**20:>9.1f} MiB")


async def main_async(args: argparse.Namespace, url: str) -> None:
    engine = create_async_engine(url, pool_size=2)
    settings = Settings(
        _env_file=None,
        database_url=SecretStr(url),
        outbox_retention_days=args.retention_days,
    )
    try:
        async with engine.connect() as raw:
            conn = await raw.execution_options(isolation_level="AUTOCOMMIT")
            channel = str(
                await conn.scalar(
                    text(
                        "INSERT INTO channels (id, platform, name, account_id, secrets) "
                        "VALUES (gen_random_uuid(), 'whatsapp', 'bench', '1', '\\x00') RETURNING id"
                    )
                )
            )
            started = time.perf_counter()
            await populate(conn, channel, args.messages, args.days, "a")
            await conn.execute(text(_RECEIPTS), {"channel": channel, "count": args.messages})
            await conn.execute(text("VACUUM ANALYZE"))
            print(
                f"{args.messages:,} messages over {args.days:g} days, retention "
                f"{args.retention_days:g} days (populated in {time.perf_counter() - started:.1f} s)"
            )
            before = await sizes(conn)
            show("before retention", before)

            started = time.perf_counter()
            deleted = await purge_once(conn, settings)
            elapsed = time.perf_counter() - started
            after = await sizes(conn)
            show("after retention (before VACUUM: the space is freed, not returned)", after)
            total = sum(deleted.values())
            print(
                f"\ndeleted {deleted} (+ attempts by cascade: "
                f"{before['outbox_attempts'][0] - after['outbox_attempts'][0]:,}) in "
                f"{elapsed:.2f} s, batches of {settings.outbox_retention_batch_size:,}: "
                f"{total / elapsed:,.0f} rows/s (not counting cascaded attempts)"
            )
            pending = await conn.scalar(
                text(
                    "SELECT count(*) FROM outbox_messages WHERE state IN ('queued', 'sending', "
                    "'retrying') AND created_at < now() - :d * interval '1 day'"
                ),
                {"d": args.retention_days},
            )
            print(f"pending messages older than retention, kept: {pending:,}")

            await conn.execute(text("VACUUM ANALYZE"))
            await populate(conn, channel, deleted["outbox_messages"], 1.0, "b")
            refilled = await sizes(conn)
            show(
                f"after VACUUM and {deleted['outbox_messages']:,} new messages "
                "(freed space reused: no growth)",
                refilled,
            )
            grew = sum(s for _, s in refilled.values()) / sum(s for _, s in before.values()) - 1
            print(f"\ntotal size vs before retention: {grew:+.1%}")
    finally:
        await engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=60.0)
    parser.add_argument("--retention-days", type=float, default=30.0)
    args = parser.parse_args()
    with database() as db:
        url = db.url
        asyncio.run(main_async(args, url))


if __name__ == "__main__":
    main()
