"""Issue 10 item 4: every broker of a 3-node Apache Kafka cluster stopped, then started again,
while signed webhooks of several conversations keep coming. Runs in the Kafka pass only
(``SWITCHBOARD_TEST_BROKER=kafka``): it starts three JVMs of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

import normalizer
from infra.kafka_cluster import KafkaCluster
from infra.settings import Settings
from tests.conftest import TEST_BROKER, broker_settings
from tests.integration.gateway.conftest import (
    ACCOUNTS,
    Ingress,
    has,
    read_topic,
    running_ingress,
    whatsapp_payload,
)
from tests.integration.kafka_failures.helpers import until

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(TEST_BROKER != "kafka", reason="Kafka failure tests: Kafka pass only"),
]

PEERS = [str(100 + n) for n in range(6)]  # one conversation each
PHASES = {"up": 2, "down": 8, "back": 2}  # messages per conversation in each phase


async def spool_size(sm: async_sessionmaker[AsyncSession]) -> int:
    async with sm() as session:
        return int((await session.execute(text("SELECT count(*) FROM gateway_spool"))).scalar_one())


async def post_round(ingress: Ingress, phase: str, count: int) -> dict[str, bytes]:
    """``count`` messages per conversation, interleaved across conversations; each answered 200."""
    bodies: dict[str, bytes] = {}
    for n in range(count):
        for peer in PEERS:
            name = f"{phase}-{peer}-{n}"
            bodies[name] = whatsapp_payload((f"wamid.{name}", peer, name))
            response = await ingress.post_meta("whatsapp", bodies[name])
            assert response.status_code == 200, (name, response.status_code, response.text)
    return bodies


async def test_every_broker_down_spools_then_relays_everything_in_order(
    settings: Settings,
    engine: AsyncEngine,
    sessionmaker: async_sessionmaker[AsyncSession],
    kafka_cluster_factory: Callable[[int], KafkaCluster],
) -> None:
    """While no broker runs, every webhook is answered 200 from the PostgreSQL spool. Once
    the cluster is back (same data), the relay publishes all of them by itself: 0 lost, and
    each conversation's events are on ``inbound.v1`` in the order they were accepted, also
    those accepted right after the return while older ones of their conversation still wait
    in the spool.

    Duplicates (same event id) are counted: a send that timed out during the outage may still
    be delivered by the producer once the brokers return, next to the relay's copy. Order is
    checked on the first copy of each id (what a consumer that drops duplicates sees) and on
    the copies last published.
    """
    began = time.monotonic()
    cluster = await asyncio.to_thread(kafka_cluster_factory, 3)
    print(f"cluster started in {time.monotonic() - began:.1f} s")
    run_settings = settings.model_copy(
        update={
            **broker_settings(cluster),
            "kafka_request_timeout_ms": 3000,
            "gateway_publish_timeout_seconds": 1.0,
            "gateway_relay_interval_seconds": 0.2,
            "gateway_relay_batch_size": 25,
        }
    )
    bodies: dict[str, bytes] = {}
    async with asyncio.timeout(400):
        async with running_ingress(run_settings) as ingress:
            await ingress.create_channel("whatsapp")
            bodies |= await post_round(ingress, "up", PHASES["up"])

            stopping = time.monotonic()
            await asyncio.to_thread(cluster.stop)
            stop_s = time.monotonic() - stopping
            answered = time.monotonic()
            bodies |= await post_round(ingress, "down", PHASES["down"])
            answer_s = time.monotonic() - answered
            down_count = PHASES["down"] * len(PEERS)
            spooled = await spool_size(sessionmaker)
            assert spooled >= down_count, "every webhook answered while down is in the spool"

            restarting = time.monotonic()
            await asyncio.to_thread(cluster.start)
            start_s = time.monotonic() - restarting
            back = await post_round(ingress, "back", PHASES["back"])
            bodies |= back
            left_when_back = await spool_size(sessionmaker)

            async def drained() -> bool:
                return await spool_size(sessionmaker) == 0

            await until(drained, limit_s=120)
            drained_s = time.monotonic() - restarting

            def event_id(body: bytes) -> str:
                (event, *_) = normalizer.normalize(
                    "whatsapp",
                    body,
                    channel_id=ingress.channels["whatsapp"],
                    account_id=ACCOUNTS["whatsapp"],
                )
                return event.id

            ids = {name: event_id(body) for name, body in bodies.items()}
            records = await read_topic(run_settings, has(*ids.values()), limit_s=90)
            leaving = time.monotonic()
        shutdown_s = time.monotonic() - leaving

    found = Counter(r["event"]["id"] for r in records)
    lost = set(ids.values()) - set(found)
    duplicates = sum(c - 1 for c in found.values())
    first_copies, last_copies = order_per_conversation(records)
    expected = {
        peer: [f"{p}-{peer}-{n}" for p, count in PHASES.items() for n in range(count)]
        for peer in PEERS
    }
    print(
        f"webhooks={len(ids)} while_down={down_count} spooled={spooled} lost={len(lost)} "
        f"duplicates={duplicates} stop_cluster_s={stop_s:.1f} answer_while_down_s={answer_s:.1f} "
        f"start_cluster_s={start_s:.1f} spool_left_after_back_round={left_when_back} "
        f"start_to_drained_s={drained_s:.1f} app_shutdown_s={shutdown_s:.1f}"
    )
    assert not lost
    assert first_copies == expected
    assert last_copies == expected


def order_per_conversation(
    records: list[dict[str, Any]],
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Per conversation (the sender), the texts in topic order, keeping the first copy of each
    event id, and keeping the last copy."""
    by_peer: dict[str, list[tuple[str, str]]] = {}
    for record in records:
        event = record["event"]
        peer = event["subject"].rsplit(":", 1)[1]
        by_peer.setdefault(peer, []).append((event["id"], event["data"]["message"]["text"]))

    def keep(pairs: list[tuple[str, str]]) -> list[str]:
        seen: set[str] = set()
        out = []
        for event_id, body in pairs:
            if event_id not in seen:
                seen.add(event_id)
                out.append(body)
        return out

    first = {peer: keep(pairs) for peer, pairs in by_peer.items()}
    last = {peer: keep(pairs[::-1])[::-1] for peer, pairs in by_peer.items()}
    return first, last
