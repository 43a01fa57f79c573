"""Stopping the served app while the broker is stalled (issue 9, D16): the shutdown has a
deadline. Before, ``switchboard serve`` took 27 s to exit on SIGTERM: the producer's stop
waited for every unacknowledged record. Nothing is lost by giving up: what the broker did not
acknowledge is in the spool (PostgreSQL), relayed by the next process.

The stall is real: the embedded broker process is stopped with SIGSTOP (connections open,
nothing answers) and continued afterwards."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import component
from infra.embedded import EmbeddedBroker
from infra.runner import bind_socket, run
from infra.settings import Settings
from switchboard.app import create_app
from tests.conftest import ADMIN_KEY
from tests.integration.gateway.conftest import channel_body, meta_headers, whatsapp_payload

pytestmark = pytest.mark.integration


@pytest.fixture
def own_broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as broker:
        yield broker
        if broker.pid is not None:
            os.kill(broker.pid, signal.SIGCONT)


async def test_serve_stops_within_its_deadline_while_the_broker_is_stalled(
    settings: Settings,
    engine: AsyncEngine,
    own_broker: EmbeddedBroker,
    capfd: pytest.CaptureFixture[str],
) -> None:
    serve_settings = settings.model_copy(
        update={
            "kafka_bootstrap_servers": own_broker.bootstrap_servers,
            "kafka_request_timeout_ms": 30_000,  # a record in flight would hold the stop 30 s
            "gateway_publish_timeout_seconds": 1.0,
            "gateway_relay_interval_seconds": 3600.0,
        }
    )
    sock = bind_socket("127.0.0.1", 0)
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    serve_settings = serve_settings.model_copy(update={"http_port": sock.getsockname()[1]})
    app = create_app(serve_settings, [component(serve_settings)])
    stop = asyncio.Event()
    ready = asyncio.Event()
    server = asyncio.create_task(
        run(app=app, sock=sock, stop=stop, on_ready=ready.set, log_level="warning")
    )
    try:
        async with asyncio.timeout(30):
            await ready.wait()
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            created = await client.post(
                "/v1/channels",
                json=channel_body("whatsapp"),
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
            assert created.status_code == 201, created.text
            path = f"/webhooks/whatsapp/{created.json()['id']}"
            warm = whatsapp_payload(("wamid.Q0", "7", "published"))
            response = await client.post(path, content=warm, headers=meta_headers(warm))
            assert response.json()["new"] == 1
            # On a loaded machine the first publish (metadata, producer id) can outlast the 1 s
            # publish timeout and spool the warm-up too: count from here.
            async with engine.connect() as conn:
                before = (
                    await conn.execute(text("SELECT count(*) FROM gateway_spool"))
                ).scalar_one()

            assert own_broker.pid is not None
            os.kill(own_broker.pid, signal.SIGSTOP)
            stalled = whatsapp_payload(("wamid.Q1", "7", "broker stalled"))
            response = await client.post(path, content=stalled, headers=meta_headers(stalled))
            assert response.status_code == 200, response.text  # spooled after the publish timeout

        started = time.monotonic()
        stop.set()
        async with asyncio.timeout(120):
            await server
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        if own_broker.pid is not None:
            os.kill(own_broker.pid, signal.SIGCONT)
        if not server.done():
            await server

    # kafka_stop_timeout_seconds (3 s) and the closing steps; it was 89 s here (30 s request
    # timeout and retries) and 27 s with the defaults.
    assert elapsed < 15, f"the shutdown took {elapsed:.1f} s"
    assert "shutdown failed" not in capfd.readouterr().err
    async with engine.connect() as conn:
        spooled = (await conn.execute(text("SELECT count(*) FROM gateway_spool"))).scalar_one()
    assert spooled == before + 1, "the record the broker did not acknowledge waits in the spool"
