"""The outbox as a component of the HTTP app (the messages API) and as a worker."""

from __future__ import annotations

import asyncio

from switchboard.app import Component
from switchboard.resources import Resources
from switchboard.settings import Settings


def component(settings: Settings) -> Component:
    return Component(name="outbox")


async def run_worker(resources: Resources, stop: asyncio.Event) -> None:
    """Deliver queued messages until ``stop`` is set."""
    await stop.wait()
