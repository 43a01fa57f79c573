"""Slow and abusive clients against the app as ``switchboard serve`` runs it (issue 9, D7):
real sockets, the real runner (uvicorn with ``GuardedHttpProtocol``), short limits.

Before: a connection that sent nothing, or its headers a byte at a time, or less body than its
``Content-Length``, was held forever; headers had no size bound; every webhook body was
buffered whole before its signature check with no bound on their total."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from gateway.app import component
from gateway.service import Gateway, GatewayHolder
from infra.runner import HttpLimits, bind_socket, run
from infra.settings import Settings
from switchboard.app import create_app
from tests.conftest import ADMIN_KEY
from tests.integration.gateway.conftest import channel_body, meta_headers, whatsapp_payload

pytestmark = pytest.mark.integration

LIMITS = HttpLimits(
    header_timeout=1.0, body_timeout=1.0, max_header_bytes=8192, keep_alive_timeout=1
)
BUDGET = 100_000
BOUND = 20.0
"""Generous bound on waiting for the server to close a connection (the limits are 1 s)."""


@dataclass
class Served:
    port: int
    client: httpx.AsyncClient
    holder: GatewayHolder
    path: str

    @property
    def gateway(self) -> Gateway:
        assert self.holder.gateway is not None
        return self.holder.gateway

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


@pytest.fixture
async def served(settings: Settings, engine: AsyncEngine) -> AsyncIterator[Served]:
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app_settings = settings.model_copy(
        update={"http_port": port, "webhook_max_inflight_body_bytes": BUDGET}
    )
    holder = GatewayHolder()
    app = create_app(app_settings, [component(app_settings, holder)])
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        run(app=app, sock=sock, stop=stop, on_ready=ready.set, log_level="warning", limits=LIMITS)
    )
    try:
        async with asyncio.timeout(30):
            await ready.wait()
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            created = await client.post(
                "/v1/channels",
                json=channel_body("whatsapp"),
                headers={"Authorization": f"Bearer {ADMIN_KEY}"},
            )
            assert created.status_code == 201, created.text
            yield Served(port, client, holder, f"/webhooks/whatsapp/{created.json()['id']}")
    finally:
        stop.set()
        await task


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (bounded wait)."""
    received = b""
    async with asyncio.timeout(BOUND):
        while chunk := await reader.read(65536):
            received += chunk
    return received


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(BOUND):
        while True:
            if condition():
                return
            await asyncio.sleep(0.02)


def head(path: str, length: int, extra: str = "") -> bytes:
    return (
        f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\n"
        f"x-hub-signature-256: sha256={'0' * 64}\r\ncontent-length: {length}\r\n{extra}\r\n"
    ).encode()


async def test_a_connection_that_sends_nothing_is_closed(served: Served) -> None:
    reader, writer = await served.connect()
    try:
        assert await closed_by_server(reader) == b""
    finally:
        writer.close()


async def test_headers_sent_a_byte_at_a_time_are_cut_off(served: Served) -> None:
    """Slowloris: every byte arrives well within any idle timeout; the head as a whole does
    not arrive within ``header_timeout``."""
    reader, writer = await served.connect()
    started = time.monotonic()
    closed = asyncio.create_task(closed_by_server(reader))
    try:
        writer.write(b"POST " + served.path.encode() + b" HTTP/1.1\r\nx-slow: ")
        with contextlib.suppress(ConnectionError):
            while not closed.done() and time.monotonic() - started < BOUND:
                writer.write(b"a")
                await writer.drain()
                await asyncio.sleep(0.2)
        assert await closed == b""
    finally:
        writer.close()


async def test_a_body_shorter_than_its_content_length_is_cut_off(served: Served) -> None:
    reader, writer = await served.connect()
    try:
        writer.write(head(served.path, 1000) + b'{"object": "whatsapp')
        await writer.drain()
        assert await closed_by_server(reader) == b""
    finally:
        writer.close()
    await until(lambda: served.gateway.bodies.held == 0)  # the cut-off request gave them back


async def test_headers_over_the_limit_are_431(served: Served) -> None:
    reader, writer = await served.connect()
    try:
        writer.write(head(served.path, 2, extra=f"x-big: {'a' * 20_000}\r\n"))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        answer = await closed_by_server(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]


async def test_an_idle_keep_alive_connection_is_closed(served: Served) -> None:
    reader, writer = await served.connect()
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        await writer.drain()
        answer = await closed_by_server(reader)
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:80]


async def test_bodies_beyond_the_in_flight_budget_are_503_with_retry_after(
    served: Served,
) -> None:
    """One upload holds 60 kB of the 100 kB budget: a webhook declaring 50 kB is refused at
    once (503, Retry-After) without being read; a small one still fits; the bytes come back."""
    _, writer = await served.connect()
    try:
        writer.write(head(served.path, 80_000) + b"x" * 60_000)
        await writer.drain()
        await until(lambda: served.gateway.bodies.held >= 60_000)

        big = b"y" * 50_000
        refused = await served.client.post(served.path, content=big, headers=meta_headers(big))
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"] == "1"
        assert refused.json()["error"]["code"] == "service_unavailable"

        small = whatsapp_payload(("wamid.BUDGET1", "41", "still fits"))
        accepted = await served.client.post(served.path, content=small, headers=meta_headers(small))
        assert accepted.status_code == 200, accepted.text
    finally:
        writer.close()
    await until(lambda: served.gateway.bodies.held == 0)
    exposition = (await served.client.get("/metrics")).text
    assert 'reason="overloaded"' in exposition
