"""The gateway's subcommands of `switchboard` (registered by the CLI).

``switchboard replay [--channel ID] [--platform P] [--since T] [--until T] [--limit N]``
re-normalises archived raw webhooks and publishes their events (see ``gateway.replay``); it
prints one JSON line of counts. Times are RFC 3339 / ISO 8601 (a naive time is UTC).
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import normalizer


def _when(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {value!r}") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def cmd_replay(args: argparse.Namespace) -> None:
    from gateway import replay
    from gateway.service import Gateway
    from infra.entrypoint import load_settings, require_encryption_keys, run_async
    from infra.errors import SwitchboardError
    from infra.logging import configure_logging
    from infra.resources import open_resources

    settings = load_settings()
    require_encryption_keys(settings)
    configure_logging(settings)

    async def main() -> replay.ReplayResult:
        async with open_resources(settings) as resources, Gateway.open(resources) as gateway:
            return await replay.replay(
                gateway,
                channel_id=args.channel,
                platform=args.platform,
                since=args.since,
                until=args.until,
                limit=args.limit,
            )

    try:
        result = run_async(main())
    except SwitchboardError as exc:
        print(f"switchboard: {exc.message}", file=sys.stderr)
        raise SystemExit(1) from None
    print(
        json.dumps({"webhooks": result.webhooks, "events": result.events, "failed": result.failed})
    )


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the gateway's commands to the `switchboard` parser."""
    rep = subparsers.add_parser(
        "replay", help="re-normalise archived webhooks and publish their events again"
    )
    rep.add_argument("--channel", type=uuid.UUID, default=None, help="channel id")
    rep.add_argument("--platform", default=None, choices=normalizer.PLATFORMS)
    rep.add_argument("--since", type=_when, default=None, help="received at or after")
    rep.add_argument("--until", type=_when, default=None, help="received before")
    rep.add_argument(  # higher than the API's 10,000: no HTTP request waits on it
        "--limit", type=int, default=1_000_000, help="webhooks at most"
    )
    rep.set_defaults(func=cmd_replay)
