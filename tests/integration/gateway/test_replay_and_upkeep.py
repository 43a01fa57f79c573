"""Raw archive replay (admin API and CLI), retention purge and the relay's replica lock."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import normalizer
from gateway import relay
from gateway import repository as repo
from gateway.publisher import Record
from tests.conftest import ADMIN_KEY, ENCRYPTION_KEY
from tests.integration.gateway.conftest import (
    ACCOUNTS,
    Ingress,
    read_topic,
    telegram_payload,
    whatsapp_payload,
)

pytestmark = pytest.mark.integration


def wa_ids(ingress: Ingress, body: bytes) -> list[str]:
    events = normalizer.normalize(
        "whatsapp", body, channel_id=ingress.channels["whatsapp"], account_id=ACCOUNTS["whatsapp"]
    )
    return [e.id for e in events]


async def test_admin_replay_republishes_the_same_events(ingress: Ingress) -> None:
    await ingress.create_channel("whatsapp")
    await ingress.create_channel("telegram")
    wa = whatsapp_payload(("wamid.P1", "1", "one"), ("wamid.P2", "1", "two"))
    assert (await ingress.post_meta("whatsapp", wa)).status_code == 200
    assert (await ingress.post_telegram(telegram_payload(5, "tg"))).status_code == 200

    request = {"channel_id": ingress.channels["whatsapp"]}
    denied = await ingress.client.post("/v1/admin/replay", json=request)
    assert denied.status_code == 401
    replayed = await ingress.client.post(
        "/v1/admin/replay", json=request, headers=ingress.app.auth(ADMIN_KEY)
    )
    assert replayed.status_code == 200, replayed.text
    assert replayed.json() == {"webhooks": 1, "events": 2, "failed": 0}
    nothing = await ingress.client.post(
        "/v1/admin/replay",
        json={"platform": "telegram", "since": "2999-01-01T00:00:00Z"},
        headers=ingress.app.auth(ADMIN_KEY),
    )
    assert nothing.json() == {"webhooks": 0, "events": 0, "failed": 0}
    for platform in ("line", "what\u0000sapp"):
        unknown = await ingress.client.post(
            "/v1/admin/replay", json={"platform": platform}, headers=ingress.app.auth(ADMIN_KEY)
        )
        assert unknown.status_code == 422, platform

    first, second = wa_ids(ingress, wa)
    records = await read_topic(
        ingress.app.settings,
        lambda rs: [r["event"]["id"] for r in rs].count(second) >= 2,
    )
    wa_records = [r["event"] for r in records if r["event"]["data"]["platform"] == "whatsapp"]
    assert [e["id"] for e in wa_records] == [first, second, first, second]
    assert wa_records[:2] == wa_records[2:], "a replay yields exactly the original events"


async def test_cli_replay(ingress: Ingress) -> None:
    await ingress.create_channel("telegram")
    body = telegram_payload(31, "cli")
    assert (await ingress.post_telegram(body)).status_code == 200
    settings = ingress.app.settings
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
    for name, value in {
        "DATABASE_URL": settings.database_url.get_secret_value(),
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "KAFKA_ENABLE_IDEMPOTENCE": "false",
        "ENCRYPTION_KEYS": ENCRYPTION_KEY,
        "LOG_LEVEL": "WARNING",
    }.items():
        env[f"SWITCHBOARD_{name}"] = value
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "switchboard",
        "replay",
        "--platform",
        "telegram",
        "--since",
        "2000-01-01T00:00:00",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    assert json.loads(out.decode().strip().splitlines()[-1]) == {
        "webhooks": 1,
        "events": 1,
        "failed": 0,
    }
    event_id = normalizer.normalize(
        "telegram", body, channel_id=ingress.channels["telegram"], account_id=ACCOUNTS["telegram"]
    )[0].id
    records = await read_topic(
        settings, lambda rs: [r["event"]["id"] for r in rs].count(event_id) >= 2
    )
    assert [r["event"]["id"] for r in records] == [event_id, event_id]


async def test_purge_respects_the_windows(
    ingress: Ingress, sessionmaker: async_sessionmaker[AsyncSession]
) -> None:
    await ingress.create_channel("telegram")
    for update_id in (1, 2):
        assert (await ingress.post_telegram(telegram_payload(update_id, "x"))).status_code == 200
    async with sessionmaker() as session:
        await session.execute(
            text(
                "UPDATE gateway_dedup SET seen_at = now() - interval '9 days' "
                "WHERE seen_at = (SELECT min(seen_at) FROM gateway_dedup)"
            )
        )
        await session.execute(
            text(
                "UPDATE gateway_archive SET received_at = now() - interval '7 days 1 hour' "
                "WHERE id = (SELECT min(id) FROM gateway_archive)"
            )
        )
        await session.commit()
    assert await relay.purge_once(ingress.gateway) == {"dedup": 1, "archive": 1}
    assert await relay.purge_once(ingress.gateway) == {"dedup": 0, "archive": 0}
    # Within 7 days a redelivery is still a duplicate.
    again = await ingress.post_telegram(telegram_payload(2, "x"))
    assert again.json()["new"] == 0


async def test_relay_drains_in_one_replica_at_a_time(ingress: Ingress) -> None:
    gateway = ingress.gateway
    topic = ingress.app.settings.topic("inbound.v1")
    rows = [
        repo.SpoolRow(f"00000000-0000-0000-0000-00000000000{i}", "telegram", topic, "c", b"{}")
        for i in range(3)
    ]
    async with gateway.pool.acquire() as conn:
        await repo.spool(conn, rows)
    async with gateway.pool.acquire() as holder:
        # Another replica's relay holds the lock: this one skips the round.
        async with holder.transaction():
            assert await repo.try_relay_lock(holder)
            assert await relay.relay_once(gateway) == 0
        assert await relay.relay_once(gateway) in (0, 3)  # the background relay may win
    async with gateway.pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM gateway_spool") in (0, 3)
    records = await read_topic(ingress.app.settings, lambda rs: len(rs) >= 3)
    assert [r["key"] for r in records] == ["c", "c", "c"]
    assert Record  # type: ignore[truthy-function]  # the relay publishes Records: key = conversation id
