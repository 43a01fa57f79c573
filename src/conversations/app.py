"""The conversation layer as a component of the HTTP app (its API) and as a worker.

Process split (docs/conversations.md): ``switchboard serve`` replicas serve the API only;
``switchboard outbox`` (and ``switchboard dev``) run ``run_worker`` beside the delivery
worker. With ``conversations_api_runs_workers`` the HTTP process runs it too (single-process
deployments).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from conversations.contracts import conversation_event_schema
from conversations.endpoints import router
from conversations.worker import run_worker
from infra.component import Component
from infra.resources import Resources
from infra.settings import Settings

__all__ = ["component", "run_worker"]


def component(settings: Settings) -> Component:
    @asynccontextmanager
    async def lifespan(resources: Resources) -> AsyncIterator[None]:
        if not resources.settings.conversations_api_runs_workers:
            yield
            return
        stop = asyncio.Event()
        task = asyncio.create_task(run_worker(resources, stop), name="conversations")
        try:
            yield
        finally:
            stop.set()
            await task

    return Component(
        name="conversations",
        routers=[router],
        lifespan=lifespan,
        schemas={"conversation-event": conversation_event_schema()},
    )
