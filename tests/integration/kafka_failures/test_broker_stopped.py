"""Issue 10 item 4: one broker of a 3-node Apache Kafka cluster stopped (a clean shutdown) for
at least 20 s during outbox delivery, then started again. Runs in the Kafka pass only
(``SWITCHBOARD_TEST_BROKER=kafka``): it starts three JVMs of its own.

The whole outbox runs as ``switchboard outbox`` runs it (``run_worker``: the command consumer,
delivery, the lifecycle relay, the receipts consumer) next to the app with the gateway, on the
same cluster; the platform is the fake Twilio, whose signed status callbacks come back through
the gateway to ``inbound.v1`` and the receipts consumer. Commands are produced before, during
and after the outage.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from fake_platforms.server import FakePlatformServer
from gateway.app import component as gateway_component
from infra.kafka_cluster import KafkaCluster
from infra.settings import Settings
from outbox.app import component as outbox_component
from outbox.app import run_worker
from tests.conftest import ADMIN_KEY, TEST_BROKER, broker_settings
from tests.integration.gateway.conftest import channel_body
from tests.integration.kafka_failures.helpers import (
    duplicate_records,
    leaders,
    lifecycle_types,
    messages_by_command,
    produce_commands,
    read_topic,
    unpublished_events,
    until,
)
from tests.support import running_app

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(TEST_BROKER != "kafka", reason="Kafka failure tests: Kafka pass only"),
]

PER_PHASE = 40  # commands produced before, during and after the outage
RECIPIENTS = [f"+1555000{n:04d}" for n in range(20)]  # Twilio paces a pair at 1/s
OUTAGE_S = 20.0


async def test_a_broker_stopped_during_delivery_loses_no_command_and_no_event(
    settings: Settings,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    kafka_cluster_factory: Callable[[int], KafkaCluster],
) -> None:
    """0 commands lost: each is stored once and reaches the fake Twilio with the stored text
    and recipient, then ``delivered`` by its receipts. 0 lifecycle events lost: each message's
    ``message.queued``, ``message.sent`` and ``message.delivered`` are on ``events.v1``.

    The broker stays down until the commands produced during the outage are delivered and
    their events published (at least 20 s): consumption, relay and receipts go on with two
    brokers of three. Platform duplicates must be 0 (delivery runs from PostgreSQL; a broker
    has no say in it). Duplicate records on the events topic are possible and counted: a relay
    batch whose ack was lost in the leader change is published again with the same ids.
    """
    began = time.monotonic()
    cluster = await asyncio.to_thread(kafka_cluster_factory, 3)
    print(f"cluster started in {time.monotonic() - began:.1f} s")
    run_settings = settings.model_copy(
        update={
            **broker_settings(cluster),
            "kafka_consumer_group": f"stop-{uuid.uuid4().hex[:8]}",
            "outbox_consumer_batch_size": 20,
            "outbox_consumer_session_timeout_ms": 10_000,
            "outbox_poll_interval": 0.05,
            "outbox_flush_interval": 0.01,
            "outbox_channel_renew_interval": 1.0,
            "gateway_relay_interval_seconds": 0.2,
        }
    )
    names = [f"stop-{phase}-{n:03d}" for phase in "abc" for n in range(PER_PHASE)]
    phases = {p: [n for n in names if n.startswith(f"stop-{p}-")] for p in "abc"}
    components = [gateway_component(run_settings), outbox_component(run_settings)]
    async with (
        asyncio.timeout(400),
        FakePlatformServer() as fake,
        running_app(run_settings, components) as app,
    ):
        body = {
            **channel_body("twilio"),
            "api_base_url": fake.base_url,
            "send_rate_per_second": 100.0,  # not a US long code's 1/s: this is not a rate test
        }
        created = await app.client.post("/v1/channels", json=body, headers=app.auth(ADMIN_KEY))
        assert created.status_code == 201, created.text
        channel_id = str(created.json()["id"])
        res = app.resources
        stop = asyncio.Event()
        worker = asyncio.create_task(run_worker(res, stop), name="outbox-worker")

        async def delivered(batch: list[str]) -> bool:
            if worker.done():
                worker.result()  # a crashed worker fails the test now, not at the bound
            rows = await messages_by_command(sessionmaker, batch)
            return len(rows) == len(batch) and all(
                r.state == "delivered" for found in rows.values() for r in found
            )

        async def published(batch: list[str]) -> bool:
            return await delivered(batch) and not await unpublished_events(sessionmaker)

        try:
            await produce_commands(res.producer, run_settings, channel_id, phases["a"], RECIPIENTS)
            await until(lambda: published(phases["a"]), limit_s=90)

            commands_topic = run_settings.topic("outbound.commands.v1")
            victim, _ = (await leaders(run_settings, commands_topic)).most_common(1)[0]
            stopped_at = time.monotonic()
            await asyncio.to_thread(cluster.stop_node, victim)
            stop_s = time.monotonic() - stopped_at
            await produce_commands(res.producer, run_settings, channel_id, phases["b"], RECIPIENTS)
            await until(lambda: published(phases["b"]), limit_s=120)
            progress_s = time.monotonic() - stopped_at
            await asyncio.sleep(max(0.0, OUTAGE_S - progress_s))
            down_s = time.monotonic() - stopped_at

            restarted_at = time.monotonic()
            await asyncio.to_thread(cluster.start_node, victim)
            start_s = time.monotonic() - restarted_at
            await produce_commands(res.producer, run_settings, channel_id, phases["c"], RECIPIENTS)
            await until(lambda: published(names), limit_s=120)
            after_s = time.monotonic() - restarted_at
        finally:
            stop.set()
            async with asyncio.timeout(60):
                await worker

        rows = await messages_by_command(sessionmaker, names)
        events_topic = run_settings.topic("outbound.events.v1")

        def every_event(records: list[dict[str, Any]]) -> bool:
            types = lifecycle_types(records)
            return all(types.get(n, Counter())["message.delivered"] for n in names)

        records = await read_topic(run_settings, events_topic, every_event, limit_s=90)

    types = lifecycle_types(records)
    wanted = ("message.queued", "message.sent", "message.delivered")
    events_lost = [(n, t) for n in names for t in wanted if not types.get(n, Counter())[t]]
    sends = [
        r for r in fake.requests if r.platform == "twilio" and r.path.endswith("Messages.json")
    ]
    per_command = Counter(r.form["Body"][0].removeprefix("text of ") for r in sends)
    commands_lost = [n for n in names if len(rows.get(n, [])) != 1 or not per_command[n]]
    platform_duplicates = sum(c - 1 for c in per_command.values())
    callbacks = Counter(c.status for c in fake.callbacks)
    print(
        f"victim={victim} commands={len(names)} stored={len(rows)} "
        f"platform_requests={len(sends)} platform_duplicates={platform_duplicates} "
        f"commands_lost={len(commands_lost)} events_lost={len(events_lost)} "
        f"event_records={len(records)} event_duplicates={duplicate_records(records)} "
        f"callbacks={dict(callbacks)} stop_node_s={stop_s:.1f} "
        f"outage_batch_done_s={progress_s:.1f} down_s={down_s:.1f} "
        f"start_node_s={start_s:.1f} after_restart_done_s={after_s:.1f}"
    )
    assert not commands_lost, commands_lost[:5]
    assert not events_lost, events_lost[:5]
    assert set(per_command) == set(names), "a request for a command that was never produced"
    assert platform_duplicates == 0, per_command.most_common(3)
    for name, (row,) in rows.items():
        (sent,) = [r for r in sends if r.form["Body"][0] == f"text of {name}"]
        assert sent.form["Body"] == [row.content["text"]]
        assert sent.form["To"] == [row.recipient]
    assert set(callbacks) == {200}, "every status callback was taken by the gateway"
    assert len(fake.callbacks) == 2 * len(names)
