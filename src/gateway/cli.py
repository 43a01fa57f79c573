"""The gateway's subcommands of `switchboard` (registered by the CLI)."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    """Add the gateway's commands to the `switchboard` parser."""
