"""``python -m fake_platforms --port N``: serve the fakes standalone (benchmarks drive it from
another process so that the client's CPU is measured alone). Prints ``listening: <url>``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

from fake_platforms.server import FakePlatformServer


async def _serve(host: str, port: int, record: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakePlatformServer(host, port, record=record) as server:
        print(f"listening: {server.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fake_platforms", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--record", action="store_true", help="keep every request in memory (off by default)"
    )
    args = parser.parse_args(argv)
    runner: asyncio.Runner
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner, contextlib.suppress(KeyboardInterrupt):
        runner.run(_serve(args.host, args.port, args.record))


if __name__ == "__main__":
    main()
