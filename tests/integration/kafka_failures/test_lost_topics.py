"""Issue 10 item 6: never trust a broker that lost its topics.

The embedded broker keeps topics in memory: stopped and started again on the same port, it
answers without them. Webhooks spooled during the outage must reach ``switchboard.inbound.v1``
once it returns: the relay checks (and re-creates) the topics before it trusts an ack, and keeps
its rows otherwise. Runs on Tansu on every pass (it needs a broker of its own to restart),
and on a 1-node Kafka cluster whose data directory is wiped in the Kafka pass.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import AsyncIterator, Callable

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from infra.embedded import EmbeddedBroker
from infra.kafka_cluster import KafkaCluster
from infra.settings import Settings
from tests.conftest import TEST_BROKER, broker_settings
from tests.integration.gateway.conftest import (
    Ingress,
    event_id,
    has,
    ingress_on_own_broker,
    read_topic,
    running_ingress,
    whatsapp_payload,
)
from tests.support import scalar, until

pytestmark = pytest.mark.integration

WEBHOOKS = 60


@pytest.fixture
async def outage_ingress(
    settings: Settings, engine: AsyncEngine, own_broker: EmbeddedBroker
) -> AsyncIterator[Ingress]:
    async with ingress_on_own_broker(
        settings,
        own_broker,
        gateway_relay_interval_seconds=0.2,
        gateway_relay_batch_size=25,
    ) as ingress:
        yield ingress


async def test_relay_keeps_its_spool_until_a_broker_that_has_the_topic_confirms(
    outage_ingress: Ingress,
    own_broker: EmbeddedBroker,
    sessionmaker: async_sessionmaker[AsyncSession],
) -> None:
    await spool_then_restart_without_topics(
        outage_ingress, sessionmaker, own_broker.stop, own_broker.start
    )


@pytest.mark.skipif(TEST_BROKER != "kafka", reason="starts Apache Kafka: Kafka pass only")
async def test_relay_recreates_the_topics_of_a_wiped_kafka_node(
    settings: Settings,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    kafka_cluster_factory: Callable[[int], KafkaCluster],
) -> None:
    """The same on a 1-node Kafka cluster: SIGKILL, data directory wiped, started again."""
    cluster = await asyncio.to_thread(kafka_cluster_factory, 1)
    node = cluster.node(1)

    def stop() -> None:
        cluster.kill_node(1)
        shutil.rmtree(node.data_dir)

    def start() -> None:
        cluster.start()

    run_settings = settings.model_copy(
        update={
            **broker_settings(cluster),
            "kafka_request_timeout_ms": 3000,
            "gateway_publish_timeout_seconds": 1.0,
            "gateway_broker_backoff_seconds": 3600.0,
            "gateway_relay_interval_seconds": 0.2,
            "gateway_relay_batch_size": 25,
        }
    )
    async with asyncio.timeout(300), running_ingress(run_settings) as ingress:
        await spool_then_restart_without_topics(ingress, sessionmaker, stop, start, settle=False)


async def spool_then_restart_without_topics(
    ingress: Ingress,
    sessionmaker: async_sessionmaker[AsyncSession],
    stop: Callable[[], object],
    start: Callable[[], object],
    *,
    settle: bool = True,
) -> None:
    """Spool webhooks while the broker is down, bring it back without topics: 0 lost.

    With ``settle``, timed-out sends fail for good before the broker returns (no late
    duplicates). aiokafka's idempotent producer keeps retrying them against a dead Kafka node,
    so there they may still land after the restart: duplicates, counted, same event ids.
    """
    await ingress.create_channel("whatsapp")
    gateway = ingress.gateway
    bodies = [
        whatsapp_payload((f"wamid.L{n}", str(100 + n % 7), f"lost-topics {n}"))
        for n in range(WEBHOOKS)
    ]
    ids = [event_id(ingress, body) for body in bodies]

    await asyncio.to_thread(stop)
    for body in bodies:
        response = await ingress.post_meta("whatsapp", body)
        assert response.status_code == 200, response.text
    assert await scalar(sessionmaker, "SELECT count(*) FROM gateway_spool") == WEBHOOKS

    async def settled() -> bool:
        return not gateway.publisher.unresolved_sends

    if settle:
        await until(settled, limit_s=30)
    began = time.monotonic()
    await asyncio.to_thread(start)  # back without any topic
    gateway.publisher.broker_up()
    gateway.spool_written.set()

    async def drained() -> bool:
        return bool(await scalar(sessionmaker, "SELECT count(*) FROM gateway_spool") == 0)

    await until(drained, limit_s=120)
    drained_s = time.monotonic() - began
    records = await read_topic(ingress.app.settings, has(*ids), limit_s=60)
    found = [r["event"]["id"] for r in records]
    lost = set(ids) - set(found)
    duplicates = len(found) - len(set(found))
    print(
        f"webhooks={WEBHOOKS} found={len(set(found))} lost={len(lost)} "
        f"duplicates={duplicates} restart_to_drained_s={drained_s:.1f}"
    )
    assert not lost
