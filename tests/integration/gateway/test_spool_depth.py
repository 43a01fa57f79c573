"""``switchboard_gateway_spool_depth``: what the spool holds, sampled by the relay loop."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from gateway import relay
from gateway import repository as repo
from infra.settings import Settings
from tests.integration.gateway.conftest import Ingress

pytestmark = pytest.mark.integration


@pytest.fixture
def gateway_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "gateway_relay_interval_seconds": 0.05,
            "gateway_spool_sample_interval_seconds": 0.05,
            "kafka_request_timeout_ms": 2000,
        }
    )


async def spool_depth(value: float) -> None:
    async with asyncio.timeout(30):
        while REGISTRY.get_sample_value("switchboard_gateway_spool_depth") != value:  # noqa: ASYNC110 - a metric another task sets
            await asyncio.sleep(0.05)


async def test_the_relay_reports_the_spool_depth(ingress: Ingress) -> None:
    gateway = ingress.gateway
    topic = ingress.app.settings.topic("inbound.v1")
    rows = [
        repo.SpoolRow(f"00000000-0000-0000-0000-00000000001{i}", "telegram", topic, "c", b"{}")
        for i in range(4)
    ]
    async with gateway.pool.acquire() as holder, holder.transaction():
        # Play another replica's relay, so nothing drains. The background relay takes the same
        # lock for each of its rounds: wait for it to be free rather than assume it is.
        async with asyncio.timeout(30):
            while not await repo.try_relay_lock(holder):  # noqa: ASYNC110 - a lock another task holds
                await asyncio.sleep(0.01)
        async with gateway.pool.acquire() as conn:
            await repo.spool(conn, rows)
        assert await relay.sample_spool_depth(gateway) == 4
        await spool_depth(4)
    await spool_depth(0)  # the background relay drained it and sampled again
