"""Requests per client CPU-second, by concurrency, for the HTTP stacks the outbox could use.

The fake platform server runs in a separate process (``python -m fake_platforms``), so
``time.process_time()`` here measures the client alone. Each request is a WhatsApp text send
(the same JSON bytes for every stack). Stacks:

- ``httpx``            httpx.AsyncClient, default (httpcore) transport
- ``httpx+aiohttp``    httpx.AsyncClient over httpx_aiohttp.AiohttpTransport
- ``aiohttp``          plain aiohttp.ClientSession
- ``sender``           the real path: ``WhatsAppSender.send`` through ``make_http_client``
                       (request building, orjson, classification included)

Usage: ``python bench/http_transports.py [--seconds 3] [--uvloop]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import httpx
import orjson
from httpx_aiohttp import AiohttpTransport

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from outbox.contracts import SendCommand  # noqa: E402
from outbox.platforms import SENDERS, ChannelConfig, Sender, make_http_client  # noqa: E402

TOKEN = "EAAG-bench-token"
BODY = orjson.dumps(
    {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": "+393331234567",
        "type": "text",
        "text": {"body": "Your order has shipped", "preview_url": False},
    }
)
HEADERS = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
COMMAND = SendCommand.model_validate(
    {
        "id": "bench",
        "channel_id": "ch",
        "to": "+393331234567",
        "content": {"kind": "text", "text": "Your order has shipped"},
    }
)
CONCURRENCY = (1, 8, 64)
LIMITS = httpx.Limits(max_connections=128, max_keepalive_connections=128)

Request = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class Row:
    stack: str
    concurrency: int
    requests: int
    cpu_s: float
    wall_s: float
    p50_ms: float
    p99_ms: float

    @property
    def per_cpu_s(self) -> float:
        return self.requests / self.cpu_s

    @property
    def per_wall_s(self) -> float:
        return self.requests / self.wall_s


@contextlib.contextmanager
def fake_server() -> Iterator[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fake_platforms", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if not line.startswith("listening: "):
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield line.removeprefix("listening: ")
    finally:
        proc.terminate()
        proc.wait(timeout=10)


async def measure(stack: str, request: Request, concurrency: int, seconds: float) -> Row:
    for _ in range(max(50, concurrency * 4)):  # warm the pool
        await request()
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await request()
            latencies.append(time.perf_counter() - started)

    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    cuts = statistics.quantiles(latencies, n=100)
    return Row(stack, concurrency, len(latencies), cpu, wall, cuts[49] * 1e3, cuts[98] * 1e3)


async def bench_stack(stack: str, base_url: str, seconds: float) -> list[Row]:
    url = f"{base_url}/v21.0/106540352242922/messages"
    rows: list[Row] = []
    for concurrency in CONCURRENCY:
        if stack == "aiohttp":
            connector = aiohttp.TCPConnector(limit=128)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def plain() -> None:
                    async with session.post(url, data=BODY, headers=HEADERS) as response:
                        await response.read()
                        assert response.status == 200

                rows.append(await measure(stack, plain, concurrency, seconds))
            continue
        if stack == "sender":
            channel = ChannelConfig(
                "ch", "whatsapp", "106540352242922", {"access_token": TOKEN}, base_url
            )
            sender = SENDERS["whatsapp"]
            async with make_http_client(timeout=10.0) as client:

                async def via_sender(
                    sender: Sender = sender, channel: ChannelConfig = channel
                ) -> None:
                    result = await sender.send(client, channel, COMMAND, timeout=10.0)
                    assert result.outcome == "sent"

                rows.append(await measure(stack, via_sender, concurrency, seconds))
            continue
        transport = AiohttpTransport(limits=LIMITS) if stack == "httpx+aiohttp" else None
        async with httpx.AsyncClient(
            limits=LIMITS, transport=transport, timeout=10.0
        ) as httpx_client:

            async def with_httpx() -> None:
                response = await httpx_client.post(url, content=BODY, headers=HEADERS)
                assert response.status_code == 200

            rows.append(await measure(stack, with_httpx, concurrency, seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=3.0, help="per stack and concurrency")
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument(
        "--stacks", default="httpx,httpx+aiohttp,aiohttp,sender", help="comma-separated subset"
    )
    args = parser.parse_args()
    loop_factory = None
    if args.uvloop:
        import uvloop

        loop_factory = uvloop.new_event_loop
    rows: list[Row] = []
    with fake_server() as base_url:
        for stack in args.stacks.split(","):
            with asyncio.Runner(loop_factory=loop_factory) as runner:
                rows.extend(runner.run(bench_stack(stack, base_url, args.seconds)))
    loop_name = "uvloop" if args.uvloop else "asyncio"
    print(
        f"client loop: {loop_name}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs; "
        f"{args.seconds:g} s per cell; server: python -m fake_platforms (separate process)"
    )
    header = f"{'stack':<14} {'conc':>4} {'req/CPU-s':>10} {'req/s wall':>10}"
    print(f"{header} {'p50 ms':>8} {'p99 ms':>8}")
    for r in rows:
        print(
            f"{r.stack:<14} {r.concurrency:>4} {r.per_cpu_s:>10,.0f} {r.per_wall_s:>10,.0f} "
            f"{r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
        )


if __name__ == "__main__":
    main()
