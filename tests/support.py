"""Helpers for integration tests: run the real app on a real socket in the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import httpx
import uvicorn

from switchboard.app import Component, create_app, open_resources
from switchboard.resources import Resources
from switchboard.runner import bind_socket
from switchboard.settings import Settings


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
