"""``python -m fake_platforms --port N``: serve the fakes standalone (benchmarks drive it from
another process so that the client's CPU is measured alone). Prints ``listening: <url>``.
``--media KEY=FILE`` (repeatable) serves FILE as the media KEY (a WhatsApp media id, a Telegram
file_id, …), e.g. to try the media proxy under ``switchboard dev``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import mimetypes
import signal
from pathlib import Path

from fake_platforms.server import FakePlatformServer


async def _serve(host: str, port: int, record: bool, media: dict[str, tuple[bytes, str]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakePlatformServer(host, port, record=record) as server:
        for key, (data, content_type) in media.items():
            server.add_media(key, data, content_type)
        print(f"listening: {server.base_url}", flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m fake_platforms", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--record", action="store_true", help="keep every request in memory (off by default)"
    )
    parser.add_argument(
        "--media", action="append", metavar="KEY=FILE", help="serve FILE as the media KEY"
    )
    args = parser.parse_args(argv)
    runner: asyncio.Runner
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner, contextlib.suppress(KeyboardInterrupt):
        media = {}
        for item in args.media or ():
            key, _, path = item.partition("=")
            kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
            media[key] = (Path(path).read_bytes(), kind)
        runner.run(_serve(args.host, args.port, args.record, media))


if __name__ == "__main__":
    main()
