"""The gateway as a component of the HTTP app: webhook routes and their long-lived parts.

The lifespan opens the gateway's own asyncpg pool (the hot path's single statement does not go
through the ORM), publishes the ``Gateway`` in the component's ``GatewayHolder`` (read by the
fast path and the routes), and runs the spool relay and the retention purger until shutdown.
``POST /webhooks/…`` is served by the raw ASGI fast path (``gateway.fastpath``); the FastAPI
route documents it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import normalizer
from gateway.endpoints import routers
from gateway.fastpath import WebhookFastPath
from gateway.relay import run_purger, run_relay
from gateway.service import Gateway, GatewayHolder
from infra.component import Component
from infra.resources import Resources
from infra.settings import Settings


def lifespan(holder: GatewayHolder) -> Callable[[Resources], AbstractAsyncContextManager[None]]:
    return functools.partial(_lifespan, holder)


@contextlib.asynccontextmanager
async def _lifespan(holder: GatewayHolder, resources: Resources) -> AsyncIterator[None]:
    async with Gateway.open(resources) as gateway:
        holder.gateway = gateway
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
            holder.gateway = None


def component(settings: Settings, holder: GatewayHolder | None = None) -> Component:
    """The gateway component; ``holder`` (tests) gives access to the running gateway."""
    holder = holder if holder is not None else GatewayHolder()
    return Component(
        name="gateway",
        routers=routers(holder),
        lifespan=lifespan(holder),
        asgi_middleware=[functools.partial(WebhookFastPath, holder=holder)],
        schemas={"inbound-event": normalizer.json_schema()},
    )
