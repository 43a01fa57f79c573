"""What every process entry point needs before anything else: settings, and a clean way to fail."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

from pydantic import ValidationError

from infra.settings import Settings

EXIT_USAGE = 2
T = TypeVar("T")


def fail(message: str) -> NoReturn:
    """Exit with status 2 and one line on stderr (no traceback for expected conditions)."""
    print(f"switchboard: {message}", file=sys.stderr)
    raise SystemExit(EXIT_USAGE)


def load_settings(**overrides: object) -> Settings:
    try:
        settings = Settings()
    except ValidationError as exc:
        problems = "; ".join(
            f"SWITCHBOARD_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}"
            for e in exc.errors()
        )
        fail(f"invalid settings: {problems}")
    return settings.model_copy(update=overrides) if overrides else settings


def require_encryption_keys(settings: Settings) -> None:
    if settings.encryption_keys is None:
        fail("SWITCHBOARD_ENCRYPTION_KEYS is not set (create one with `switchboard keygen`)")


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """Run a process's main coroutine on uvloop when it is installed (it comes with
    ``uvicorn[standard]``): measurably cheaper per request and per send than asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - the standard loop works, only slower
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)
