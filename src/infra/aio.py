"""Racing work against a stop signal, and abandoning work that will not finish in time.

A statement on a connection to a database that stopped answering, or a Kafka group join the
broker never completes, does not return; its cancellation's cleanup (closing the connection)
can itself take seconds. Shutdown must not wait for either: such work is *abandoned*.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["abandon", "first_of"]

_abandoned: set[asyncio.Future[Any]] = set()
"""Strong references to abandoned tasks until they are over (the event loop keeps only weak
ones, and a task collected mid-flight never runs its cleanup)."""


def abandon(task: asyncio.Future[Any]) -> None:
    """Cancel ``task`` without waiting for it; its outcome is retrieved once it is over, so
    asyncio does not report an exception as never retrieved."""
    task.cancel()
    _abandoned.add(task)
    task.add_done_callback(_settled)


def _settled(task: asyncio.Future[Any]) -> None:
    _abandoned.discard(task)
    if not task.cancelled():
        task.exception()


async def first_of(task: asyncio.Future[Any], stop: asyncio.Event) -> bool:
    """Wait until ``task`` is done or ``stop`` is set; True if ``task`` is done. ``task`` is
    left as it is (running, if ``stop`` came first)."""
    if not stop.is_set():
        stopped = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait((task, stopped), return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
    return task.done()
