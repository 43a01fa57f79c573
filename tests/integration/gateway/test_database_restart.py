"""PostgreSQL restarting under the gateway (issue 9, D13 and D14): connections cut, then
"the database system is starting up" (SQLSTATE 57P03) for every new one, through a real
protocol-speaking proxy in front of the real server. The broker stays up."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from infra.settings import Settings
from tests.integration.gateway.conftest import (
    Ingress,
    event_id,
    has,
    ingress_through_proxy,
    read_topic,
    whatsapp_payload,
)
from tests.integration.gateway.restarting_db import RestartingPostgres

pytestmark = pytest.mark.integration


@pytest.fixture
async def db(settings: Settings) -> AsyncIterator[RestartingPostgres]:
    url = make_url(settings.database_url.get_secret_value())
    proxy = RestartingPostgres(url.host or "127.0.0.1", url.port or 5432)
    await proxy.start()
    try:
        yield proxy
    finally:
        await proxy.close()


@pytest.fixture
async def restart_ingress(
    settings: Settings, engine: AsyncEngine, db: RestartingPostgres
) -> AsyncIterator[Ingress]:
    """The app with every PostgreSQL connection through ``db``, its channel cache short."""
    async with ingress_through_proxy(
        settings,
        db.listen_port,
        gateway_channel_cache_ttl_seconds=0.3,
        gateway_channel_stale_seconds=60.0,
    ) as ingress:
        yield ingress
        db.up()


async def test_a_channel_load_while_the_database_starts_up_is_a_503(
    restart_ingress: Ingress, db: RestartingPostgres
) -> None:
    """Before: SQLAlchemy's DBAPIError was not a database error to the gateway: a plain-text
    500 with a traceback."""
    ingress = restart_ingress
    await ingress.create_channel("whatsapp")  # never loaded by the gateway: not in its cache
    db.starting()

    response = await ingress.post_meta("whatsapp", whatsapp_payload(("wamid.R1", "39", "hi")))

    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "service_unavailable"
    assert db.refused >= 1, "the app did reach the 'starting up' server"


async def test_a_known_channel_is_served_while_the_database_is_away(
    restart_ingress: Ingress, db: RestartingPostgres
) -> None:
    """PostgreSQL down, Kafka up: 200 (published without dedup) for longer than the channel
    cache's TTL. Before: the reload failed with nothing to fall back on: 503 once the TTL
    (5 s by default) was over."""
    ingress = restart_ingress
    await ingress.create_channel("whatsapp")
    warm = whatsapp_payload(("wamid.K0", "40", "loads the channel"))
    assert (await ingress.post_meta("whatsapp", warm)).status_code == 200
    db.starting()
    await asyncio.sleep(0.6)  # two TTLs: the cached entry has expired

    bodies = [whatsapp_payload((f"wamid.K{n}", "40", f"while away {n}")) for n in (1, 2)]
    for body in bodies:
        response = await ingress.post_meta("whatsapp", body)
        assert response.status_code == 200, response.text
        assert response.json()["new"] == 1
        await asyncio.sleep(0.4)  # the next one needs a reload again

    assert db.refused >= 1, "the app did try the 'starting up' server"
    wanted = [event_id(ingress, b) for b in bodies]
    records = await read_topic(ingress.app.settings, has(*wanted))
    assert {r["event"]["id"] for r in records} >= set(wanted)
    db.up()
    after = whatsapp_payload(("wamid.K3", "40", "back"))
    response = await ingress.post_meta("whatsapp", after)
    assert response.status_code == 200, response.text
