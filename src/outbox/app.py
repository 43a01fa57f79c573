"""The outbox as a component of the HTTP app (the messages API) and as a worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from outbox import caps_api, media, media_upload
from outbox.commands import run_intake
from outbox.endpoints import router
from outbox.schemas import lifecycle_event_schema, send_command_schema
from switchboard.app import Component
from switchboard.resources import Resources
from switchboard.settings import Settings


def component(settings: Settings) -> Component:
    """The messages API, plus (when ``outbox_api_runs_consumers``) the command and receipts
    consumers and the lifecycle relay as tasks of the HTTP process.

    Process split: ``switchboard serve`` replicas run the API only (they stage rows and events
    in PostgreSQL); the worker process (``switchboard outbox``, and ``switchboard dev``) runs the
    consumers, the relay and delivery from ``run_worker``. Turn the setting on only for a
    deployment with no worker process.
    """

    @asynccontextmanager
    async def lifespan(resources: Resources) -> AsyncIterator[None]:
        async with media.http_client(resources):
            if not resources.settings.outbox_api_runs_consumers:
                yield
                return
            stop = asyncio.Event()
            task = asyncio.create_task(run_intake(resources, stop), name="outbox-intake")
            try:
                yield
            finally:
                stop.set()
                await task

    return Component(
        name="outbox",
        routers=[router, media.router, media_upload.router, caps_api.router],
        lifespan=lifespan,
        schemas={
            "send-command": send_command_schema(),
            "lifecycle-event": lifecycle_event_schema(),
        },
    )


async def run_worker(resources: Resources, stop: asyncio.Event) -> None:
    """The worker process: delivery, the command and receipts consumers, the lifecycle relay,
    and the operations loops (metrics sampler, retention; one replica at a time each).

    On ``stop`` the consumers and delivery stop (delivery drains within
    ``outbox_shutdown_deadline``); the relay runs until delivery is done, then publishes what
    the drain staged, so a clean stop leaves no unpublished lifecycle event behind.
    """
    from outbox.commands import run_command_consumer
    from outbox.events import relay_once, run_relay
    from outbox.receipts_consumer import run_receipts_consumer
    from outbox.retention import run_retention
    from outbox.sampler import run_sampler
    from outbox.worker import DeliveryWorker

    relay_stop = asyncio.Event()

    async def deliver() -> None:
        try:
            await DeliveryWorker(resources).run(stop)
        finally:
            relay_stop.set()

    async def relay() -> None:
        await run_relay(resources, relay_stop)
        with contextlib.suppress(Exception):  # left for the next relay if the broker is away
            while await relay_once(resources):
                pass

    async with asyncio.TaskGroup() as group:
        group.create_task(deliver(), name="outbox-delivery")
        group.create_task(relay(), name="outbox-relay")
        group.create_task(run_command_consumer(resources, stop), name="outbox-commands")
        group.create_task(run_receipts_consumer(resources, stop), name="outbox-receipts")
        group.create_task(run_sampler(resources, stop), name="outbox-sampler")
        group.create_task(run_retention(resources, stop), name="outbox-retention")
