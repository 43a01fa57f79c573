"""Process orchestration: serve the HTTP app and run workers in one event loop, stop on signals.

Uvicorn's own signal capture re-raises the signal after shutdown, which would interrupt our
clean-up of embedded services; we install our handlers instead and tell the server to exit.
Uvicorn's proxy-headers rewriting is off: forwarded headers are trusted only where
``SWITCHBOARD_TRUST_FORWARDED_HEADERS`` says so, by the code that needs them (Twilio's URL).

Once started, the process moves what start-up allocated (~150k objects: modules, models,
compiled queries) into the collector's permanent generation (``gc.freeze``). Without it every
full collection walks them all: 70-100 ms stalls of the event loop, a few per minute under
load, which showed as send bursts and lost pacing slots at 1,000 msg/s (bench/outbox.py) and
as tail latency of webhooks.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Sequence
from typing import Any

import uvicorn
from fastapi import FastAPI

from switchboard.logging import get_logger

log = get_logger(__name__)

Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def freeze_startup_heap() -> None:
    """Collect start-up garbage once, then exempt what survives from later full collections."""
    gc.collect()
    gc.freeze()


async def run(
    *,
    app: FastAPI | None,
    sock: socket.socket | None,
    workers: Sequence[Worker] = (),
    stop: asyncio.Event,
    on_ready: Callable[[], None] | None = None,
    log_level: str = "info",
) -> None:
    """Run until ``stop`` is set (or something fails), then shut everything down in order."""
    server: _Server | None = None
    tasks: list[asyncio.Task[None]] = []
    if app is not None and sock is not None:
        config = uvicorn.Config(
            app,
            log_level=log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=5,
            lifespan="on",
            server_header=False,
            proxy_headers=False,
        )
        server = _Server(config)
        tasks.append(asyncio.create_task(server.serve(sockets=[sock]), name="http"))
    for index, worker in enumerate(workers):
        tasks.append(asyncio.create_task(worker(stop), name=f"worker-{index}"))

    async def announce() -> None:
        while server is not None and not server.started:
            if any(t.done() for t in tasks):
                return
            await asyncio.sleep(0.02)
        freeze_startup_heap()
        if on_ready is not None:
            on_ready()

    announcer = asyncio.create_task(announce())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopper, *tasks], return_when=asyncio.FIRST_COMPLETED)
    announcer.cancel()
    stop.set()
    if server is not None:
        server.should_exit = True
    results = await asyncio.gather(*tasks, return_exceptions=True)
    stopper.cancel()
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.error("runner.task_failed", error=repr(result))
            raise result
    if server is not None and not server.started and stopper not in done:
        raise RuntimeError("the HTTP server failed to start")
