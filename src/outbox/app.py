"""The outbox as a component of the HTTP app (the messages API) and as a worker."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from infra.component import Component
from infra.resources import Resources
from infra.settings import Settings
from outbox import caps_endpoints, control_endpoints, media, media_upload, template_endpoints
from outbox.commands import run_intake
from outbox.endpoints import router
from outbox.schemas import channel_event_schema, lifecycle_event_schema, send_command_schema


def component(settings: Settings) -> Component:
    """The messages API, plus (when ``outbox_api_runs_consumers``) the command and receipts
    consumers and the lifecycle relay as tasks of the HTTP process.

    Process split: ``switchboard serve`` replicas run the API only (they stage rows and events
    in PostgreSQL); the worker process (``switchboard outbox``, and ``switchboard dev``) runs the
    consumers, the relay and delivery from ``run_worker``. Turn the setting on only for a
    deployment with no worker process.
    """

    media_http = media.MediaHttp()

    @asynccontextmanager
    async def lifespan(resources: Resources) -> AsyncIterator[None]:
        async with media_http.running():
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
        routers=[
            router,
            media.router(media_http),
            media_upload.router(media_http),
            template_endpoints.router,
            control_endpoints.router,
            caps_endpoints.router,
        ],
        lifespan=lifespan,
        schemas={
            "send-command": send_command_schema(),
            "lifecycle-event": lifecycle_event_schema(),
            "channel-event": channel_event_schema(),
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
    from outbox.templates import run_template_sync
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
        group.create_task(run_template_sync(resources, stop), name="outbox-templates")
