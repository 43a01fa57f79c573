"""The gateway as a component of the HTTP app: webhook routes and their long-lived parts.

The lifespan opens the gateway's own asyncpg pool (the hot path's single statement does not go
through the ORM), publishes the ``Gateway`` in ``resources.extras["gateway"]``, and runs the
spool relay and the retention purger until shutdown. ``POST /webhooks/…`` is served by the raw
ASGI fast path (``gateway.fastpath``); the FastAPI route documents it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import normalizer
from gateway.endpoints import admin_router, router
from gateway.fastpath import WebhookFastPath
from gateway.relay import run_purger, run_relay
from gateway.service import Gateway
from switchboard.app import Component
from switchboard.resources import Resources
from switchboard.settings import Settings


@contextlib.asynccontextmanager
async def lifespan(resources: Resources) -> AsyncIterator[None]:
    async with Gateway.open(resources) as gateway:
        resources.extras["gateway"] = gateway
        stop = asyncio.Event()
        tasks = [
            asyncio.create_task(run_relay(gateway, stop), name="gateway-relay"),
            asyncio.create_task(run_purger(gateway, stop), name="gateway-purger"),
        ]
        try:
            yield
        finally:
            stop.set()
            _, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            resources.extras.pop("gateway", None)


def component(settings: Settings) -> Component:
    return Component(
        name="gateway",
        routers=[router, admin_router],
        lifespan=lifespan,
        asgi_middleware=[WebhookFastPath],
        schemas={"inbound-event": normalizer.json_schema()},
    )
