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

Slow and abusive clients (issue 9, D7): uvicorn's httptools protocol has no deadline for a
request's headers or body and no bound on header bytes (httptools buffers a partial header
value without limit); a connection that sends nothing is never closed. ``GuardedHttpProtocol``
adds them (``HttpLimits``, from the ``http_*`` settings): headers within
``http_header_timeout_seconds`` and ``http_max_header_bytes`` (431 beyond), the body within
``http_body_timeout_seconds`` of the headers (a ``Content-Length`` larger than what is sent
included); a connection past its deadline is closed. uvicorn's ``timeout_keep_alive`` closes
idle keep-alive connections. What bounds memory besides is the gateway's in-flight body budget
(``webhook_max_inflight_body_bytes``, see docs/ingress.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
import signal
import socket
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)

Worker = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class HttpLimits:
    header_timeout: float
    body_timeout: float
    max_header_bytes: int
    keep_alive_timeout: int

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpLimits:
        return cls(
            settings.http_header_timeout_seconds,
            settings.http_body_timeout_seconds,
            settings.http_max_header_bytes,
            settings.http_keep_alive_timeout_seconds,
        )


_431_BODY = b'{"error":{"code":"request_header_fields_too_large","message":"headers too large"}}'
_HEADERS_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
    + f"content-length: {len(_431_BODY)}\r\nconnection: close\r\n\r\n".encode()
    + _431_BODY
)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines for a request's head and body and a bound
    on its head's bytes (see the module docstring). ``limits`` is set by ``guarded_protocol``.

    A deadline is a number on the connection, not a timer: arming a loop timer at every
    request's start and again at its headers (and cancelling it at its end) cost more CPU per
    webhook than anything else this class does. One sweep per server, every ``_sweep_every``
    seconds while connections are open, closes those past their deadline, so a deadline is
    enforced up to one sweep late."""

    limits: ClassVar[HttpLimits]
    _open: ClassVar[set[GuardedHttpProtocol]]
    """The server's open connections (one class per server: ``guarded_protocol``)."""
    _sweeper: ClassVar[list[asyncio.TimerHandle]]
    """The server's pending sweep, if any (a list so the class attribute is shared)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline = math.inf
        self._phase = "header"
        self._in_head = True
        self._head_bytes = 0
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._expect("header", self.limits.header_timeout)
        self._open.add(self)
        if not self._sweeper:
            self._sweeper.append(self.loop.call_later(_sweep_every(self.limits), self._sweep))

    def connection_lost(self, exc: Exception | None) -> None:
        self._open.discard(self)
        self._deadline = math.inf
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_head and self._head_bytes > self.limits.max_header_bytes:
            self._refuse_head(self._head_bytes)  # a head still incomplete: httptools buffers it

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0
        self._expect("header", self.limits.header_timeout)

    def on_headers_complete(self) -> None:
        self._in_head = False
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in self.headers)
        if size > self.limits.max_header_bytes:
            self._refuse_head(size)
            return
        self._expect("body", self.limits.body_timeout)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        if not self._refused:
            super().on_body(body)

    def on_message_complete(self) -> None:
        self._deadline = math.inf
        if not self._refused:
            super().on_message_complete()

    def _refuse_head(self, size: int) -> None:
        """431 and close: the request never reaches the app."""
        log.info("http.headers_too_large", bytes=size)
        self._refused = True
        self._deadline = math.inf
        if not self.transport.is_closing():
            self.transport.write(_HEADERS_TOO_LARGE)
            self.transport.close()

    def _expect(self, phase: str, within: float) -> None:
        self._phase = phase
        self._deadline = self.loop.time() + within

    @classmethod
    def _sweep(cls) -> None:
        cls._sweeper.clear()
        if not cls._open:
            return
        any_open = next(iter(cls._open))
        now = any_open.loop.time()
        for connection in [c for c in cls._open if c._deadline <= now]:
            connection._expired()
        if cls._open:
            cls._sweeper.append(any_open.loop.call_later(_sweep_every(cls.limits), cls._sweep))

    def _expired(self) -> None:
        self._deadline = math.inf
        if not self.transport.is_closing():
            log.info("http.request_timeout", phase=self._phase)
            self.transport.close()


def _sweep_every(limits: HttpLimits) -> float:
    """Often enough that a deadline is late by a fraction of itself, at most half a second."""
    return min(0.5, limits.header_timeout / 4, limits.body_timeout / 4)


def guarded_protocol(limits: HttpLimits) -> type[GuardedHttpProtocol]:
    return type(
        "GuardedHttpProtocol",
        (GuardedHttpProtocol,),
        {"limits": limits, "_open": set(), "_sweeper": []},
    )


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
    limits: HttpLimits | None = None,
) -> None:
    """Run until ``stop`` is set (or something fails), then shut everything down in order.

    ``limits`` default to the ``SWITCHBOARD_HTTP_*`` environment (or the settings' defaults)."""
    server: _Server | None = None
    tasks: list[asyncio.Task[None]] = []
    if app is not None and sock is not None:
        limits = limits or HttpLimits.from_settings(Settings(_env_file=None))
        config = uvicorn.Config(
            app,
            log_level=log_level.lower(),
            access_log=False,
            timeout_graceful_shutdown=5,
            lifespan="on",
            server_header=False,
            proxy_headers=False,
            http=guarded_protocol(limits),
            timeout_keep_alive=limits.keep_alive_timeout,
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
