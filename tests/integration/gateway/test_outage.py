"""Broker and database outages: spool, relay, per-conversation order, 503 only when nothing
durable could be written. Each test runs its own embedded Tansu broker so it can stop it, on
every run (with SWITCHBOARD_TEST_BROKER=kafka too). The same outages on a 3-node Apache Kafka
cluster are the failure tests under tests/integration/kafka_failures/ (all brokers down, a broker
stopped, topics lost)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg  # type: ignore[import-untyped]
import prometheus_client
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from gateway import repository as repo
from infra import kafka, telemetry
from infra.embedded import EmbeddedBroker
from infra.settings import Settings
from tests.integration.gateway.conftest import (
    Ingress,
    event_id,
    has,
    ingress_on_own_broker,
    meta_headers,
    read_topic,
    whatsapp_payload,
)
from tests.support import scalar, until
from tests.tracing import TRACE, TRACEPARENT, recording_spans

pytestmark = pytest.mark.integration


@pytest.fixture
async def outage_ingress(
    settings: Settings, engine: AsyncEngine, own_broker: EmbeddedBroker
) -> AsyncIterator[Ingress]:
    async with ingress_on_own_broker(settings, own_broker) as ingress:
        yield ingress


def spooled_total() -> float:
    value = prometheus_client.REGISTRY.get_sample_value(
        "switchboard_gateway_events_total", {"platform": "whatsapp", "outcome": "spooled"}
    )
    return value or 0.0


async def test_broker_outage_spools_then_relays_once_in_order(
    outage_ingress: Ingress,
    own_broker: EmbeddedBroker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    ingress = outage_ingress
    await ingress.create_channel("whatsapp")
    gateway = ingress.gateway
    msg = {
        name: whatsapp_payload((f"wamid.{name}", peer, name))
        for name, peer in [
            ("A1", "100"),
            ("B1", "200"),
            ("A2", "100"),
            ("A3", "100"),
            ("A4", "100"),
            ("B2", "200"),
            ("C1", "300"),
        ]
    }

    own_broker.stop()
    for n, name in enumerate(["A1", "B1", "A2", "A3"], start=1):
        response = await ingress.post_meta("whatsapp", msg[name])
        assert response.status_code == 200, response.text
        # durable when answered: the spool row is committed and visible to others
        assert await scalar(sessionmaker, "SELECT count(*) FROM gateway_spool") == n

    # Let every timed-out send fail for good before the broker returns (else the producer
    # could still deliver it late: a duplicate with the same id, which consumers can drop).
    async def settled() -> bool:
        return not gateway.publisher.unresolved_sends

    await until(settled)
    lock = {"key": repo.RELAY_LOCK_KEY}
    async with sessionmaker() as relay_lock:
        # Hold the relay's advisory lock while the broker comes back: a relay round that
        # drained the spool before A4 and B2 arrive would let them be published directly
        # (a flake, about one run in three, before).
        await relay_lock.execute(text("SELECT pg_advisory_lock(:key)"), lock)
        own_broker.start()
        await kafka.ensure_topics(
            ingress.app.settings
        )  # the embedded broker keeps topics in memory
        gateway.publisher.broker_up()  # the backoff is over: new webhooks try the broker again

        # Conversations with spooled events keep going through the spool (order), others not.
        spooled_before = spooled_total()
        assert (await ingress.post_meta("whatsapp", msg["A4"])).status_code == 200
        assert (await ingress.post_meta("whatsapp", msg["B2"])).status_code == 200
        assert spooled_total() - spooled_before == 2
        await relay_lock.execute(text("SELECT pg_advisory_unlock(:key)"), lock)
    gateway.spool_written.set()  # wake the relay (its poll interval is an hour here)

    async def drained() -> bool:
        return bool(await scalar(sessionmaker, "SELECT count(*) FROM gateway_spool") == 0)

    await until(drained)
    assert (await ingress.post_meta("whatsapp", msg["C1"])).status_code == 200
    assert spooled_total() - spooled_before == 2, "C1 was published directly"

    # Markers on each conversation: everything published before them is on the topic.
    markers = {
        peer: whatsapp_payload((f"wamid.M{peer}", peer, f"M{peer}"))
        for peer in ("100", "200", "300")
    }
    for body in markers.values():
        assert (await ingress.post_meta("whatsapp", body)).status_code == 200
    records = await read_topic(
        ingress.app.settings, has(*(event_id(ingress, b) for b in markers.values()))
    )
    texts = [r["event"]["data"]["message"]["text"] for r in records]
    assert len(texts) == len(set(texts)) == 10, texts
    by_peer: dict[str, list[str]] = {}
    for record in records:
        peer = record["event"]["subject"].rsplit(":", 1)[1]
        by_peer.setdefault(peer, []).append(record["event"]["data"]["message"]["text"])
    assert by_peer == {
        "100": ["A1", "A2", "A3", "A4", "M100"],
        "200": ["B1", "B2", "M200"],
        "300": ["C1", "M300"],
    }
    exposition = (await ingress.client.get("/metrics")).text
    assert 'switchboard_gateway_events_total{outcome="relayed",platform="whatsapp"}' in exposition
    assert 'switchboard_gateway_events_total{outcome="spooled",platform="whatsapp"}' in exposition


async def test_503_only_when_neither_database_nor_broker(
    outage_ingress: Ingress, own_broker: EmbeddedBroker
) -> None:
    ingress = outage_ingress
    await ingress.create_channel("whatsapp")
    gateway = ingress.gateway
    warm = whatsapp_payload(("wamid.W0", "1", "warm the channel cache"))
    assert (await ingress.post_meta("whatsapp", warm)).status_code == 200

    dead = await asyncpg.create_pool(
        "postgresql://postgres@127.0.0.1:1/none", min_size=0, max_size=1, timeout=1
    )
    real_pool, gateway.pool = gateway.pool, dead
    try:
        # PostgreSQL down, broker up: published without dedup, still 200.
        only_kafka = whatsapp_payload(("wamid.W1", "1", "no database"))
        response = await ingress.post_meta("whatsapp", only_kafka)
        assert response.status_code == 200
        records = await read_topic(ingress.app.settings, has(event_id(ingress, only_kafka)))
        assert event_id(ingress, only_kafka) in {r["event"]["id"] for r in records}
        # Both down: 503, so the platform retries.
        own_broker.stop()
        response = await ingress.post_meta("whatsapp", whatsapp_payload(("wamid.W2", "1", "x")))
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "service_unavailable"
    finally:
        gateway.pool = real_pool
        await dead.close()

    async def settled() -> bool:
        return not gateway.publisher.unresolved_sends

    await until(settled)
    own_broker.start()


async def test_starts_without_the_broker_spools_then_relays_once_it_answers(
    settings: Settings,
    engine: AsyncEngine,
    own_broker: EmbeddedBroker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """A replica (re)started during a broker outage still takes webhooks: they are spooled,
    and published once the producer's background connect succeeds."""
    own_broker.stop()
    async with ingress_on_own_broker(
        settings,
        own_broker,
        kafka_request_timeout_ms=1000,
        gateway_publish_timeout_seconds=0.5,
        gateway_broker_backoff_seconds=0.5,
        gateway_relay_interval_seconds=0.2,
    ) as ingress:
        app = ingress.app
        ready = await app.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["kafka"].startswith("unavailable")
        await ingress.create_channel("whatsapp")
        body = whatsapp_payload(("wamid.S1", "100", "sent while the broker was down"))
        response = await ingress.post_meta("whatsapp", body)
        assert response.status_code == 200, response.text
        assert await scalar(sessionmaker, "SELECT count(*) FROM gateway_spool") == 1

        own_broker.start()  # the producer connects in the background and creates the topics

        async def drained() -> bool:
            return bool(await scalar(sessionmaker, "SELECT count(*) FROM gateway_spool") == 0)

        await until(drained, limit_s=30)
        records = await read_topic(app.settings, has(event_id(ingress, body)))
        assert [r["event"]["id"] for r in records] == [event_id(ingress, body)]
        assert (await app.client.get("/readyz")).status_code == 200


async def test_spooled_webhook_keeps_its_traceparent_through_the_relay(
    outage_ingress: Ingress,
    own_broker: EmbeddedBroker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    """Issue 11 item 2: a signed webhook with a ``traceparent`` answered from the spool (broker
    down) yields a record carrying its trace id once the relay publishes it, as the direct
    publish does (``test_traces``): the client's context unchanged with tracing off, the
    ``webhook.commit`` span's (same trace) with tracing on; no ``traceparent``, no header."""
    ingress = outage_ingress
    await ingress.create_channel("whatsapp")
    gateway = ingress.gateway
    bodies = {
        name: whatsapp_payload((f"wamid.TS{name}", peer, name))
        for name, peer in [("off", "100"), ("none", "200"), ("on", "300")]
    }

    async def post(name: str, traceparent: str | None) -> None:
        headers = meta_headers(bodies[name])
        if traceparent is not None:
            headers["traceparent"] = traceparent
        path = ingress.path("whatsapp")
        response = await ingress.client.post(path, content=bodies[name], headers=headers)
        assert response.status_code == 200, response.text

    own_broker.stop()
    await post("off", TRACEPARENT)
    await post("none", None)
    with recording_spans() as exporter:
        await post("on", TRACEPARENT)
        commit_spans = {
            f"{s.context.span_id:016x}"
            for s in exporter.get_finished_spans()
            if s.name == "webhook.commit"
        }
    async with sessionmaker() as session:
        stored = (
            await session.execute(text("SELECT traceparent FROM gateway_spool ORDER BY seq"))
        ).scalars()
        spooled = list(stored)
    assert len(spooled) == 3, "all three answered from the spool"
    assert spooled[:2] == [TRACEPARENT, None]

    async def settled() -> bool:
        return not gateway.publisher.unresolved_sends

    await until(settled)
    own_broker.start()
    await kafka.ensure_topics(ingress.app.settings)
    gateway.spool_written.set()  # wake the relay (its poll interval is an hour here)

    async def drained() -> bool:
        return bool(await scalar(sessionmaker, "SELECT count(*) FROM gateway_spool") == 0)

    await until(drained, limit_s=30)
    ids = {name: event_id(ingress, body) for name, body in bodies.items()}
    records = await read_topic(ingress.app.settings, has(*ids.values()))
    carried = {
        name: [
            telemetry.parse(r["headers"].get("traceparent"))
            for r in records
            if r["event"]["id"] == ids[name]
        ]
        for name in ids
    }
    assert carried["off"] == [TRACEPARENT]
    assert carried["none"] == [None]
    [on] = carried["on"]
    assert telemetry.trace_id(on) == TRACE
    assert on is not None
    assert on[36:52] in commit_spans, "the webhook.commit span's context, as when published"
