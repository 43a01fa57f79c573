"""Helpers for integration tests: run the real app on a real socket in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from infra.component import Component
from infra.resources import Resources, open_resources
from infra.runner import bind_socket
from infra.settings import Settings
from switchboard.app import create_app


@dataclass
class RunningApp:
    base_url: str
    client: httpx.AsyncClient
    resources: Resources
    settings: Settings

    def auth(self, key: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"}


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self):  # type: ignore[no-untyped-def]
        yield


@contextlib.asynccontextmanager
async def running_app(
    settings: Settings, components: Sequence[Component] = ()
) -> AsyncIterator[RunningApp]:
    """The app served by uvicorn on 127.0.0.1 with real resources, torn down afterwards."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    settings = settings.model_copy(update={"http_port": port})
    async with open_resources(settings) as resources:
        app = create_app(settings, components, resources=resources)
        server = _QuietServer(
            uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        base = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=base, timeout=10) as client:
                yield RunningApp(base, client, resources, settings)
        finally:
            server.should_exit = True
            await task


class StallingProxy:
    """Forwards TCP connections to ``host:port`` until ``stall()``; then holds every byte (and
    every new connection) until ``resume()``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server: asyncio.Server | None = None
        self.listen_port = 0
        """The port it listens on (127.0.0.1) once started."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.listen_port = int(self._server.sockets[0].getsockname()[1])
        return self.listen_port

    def stall(self) -> None:
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        self.resume()
        if self._server is not None:
            self._server.close()
        for writer in self._writers:
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(self._connect(client_r, client_w))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(
        self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
    ) -> None:
        self._writers.append(client_w)
        await self._flowing.wait()
        server_r, server_w = await asyncio.open_connection(self.host, self.port)
        self._writers.append(server_w)
        await asyncio.gather(
            self._pump(client_r, server_w), self._pump(server_r, client_w), return_exceptions=True
        )
        client_w.close()
        server_w.close()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                await self._flowing.wait()
                sink.write(data)
                await sink.drain()
        finally:
            with contextlib.suppress(OSError):
                sink.write_eof()


async def reader_from_start(
    settings: Settings, topic: str, limit_s: float = 30
) -> AIOKafkaConsumer:
    """A started, group-less consumer on every partition of ``topic``, at the beginning (the
    caller stops it). A topic created a moment ago reaches the consumer's cluster view only on a
    metadata refresh (Apache Kafka; Tansu knows it at once): refresh until it is there."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    try:
        async with asyncio.timeout(limit_s):
            while not (partitions := consumer.partitions_for_topic(topic)):
                await consumer._client.force_metadata_update()
                await asyncio.sleep(0.1)
        assigned = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def wait_committed(
    settings: Settings, topic: str, group: str, limit_s: float = 30
) -> dict[TopicPartition, int]:
    """Until ``group``'s committed offsets reach the end of every partition of ``topic``;
    returns those end offsets."""
    probe = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group, enable_auto_commit=False
    )
    await probe.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.kafka_topic_partitions)]
        ends: dict[TopicPartition, int] = await probe.end_offsets(partitions)
        async with asyncio.timeout(limit_s):
            while True:
                committed = {tp: await probe.committed(tp) for tp in partitions}
                if all((committed[tp] or 0) >= ends[tp] for tp in partitions):
                    return ends
                await asyncio.sleep(0.1)
    finally:
        await probe.stop()


async def until(
    check: Callable[[], Awaitable[bool]], limit_s: float = 20.0, poll_s: float = 0.05
) -> None:
    """Poll ``check`` until it holds. The limit only guards against a hang: give it room for a
    loaded 2-core machine, it is never what a test measures."""
    async with asyncio.timeout(limit_s):
        while not await check():  # noqa: ASYNC110 - polling other tasks' and processes' state
            await asyncio.sleep(poll_s)


async def scalar(sessionmaker: async_sessionmaker[AsyncSession], query: str) -> Any:
    """The one value a SQL query returns, in a session of its own."""
    async with sessionmaker() as session:
        return (await session.execute(text(query))).scalar_one()
