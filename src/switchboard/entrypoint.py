"""What every process entry point needs before anything else: settings, and a clean way to fail."""

from __future__ import annotations

import sys
from typing import NoReturn

from pydantic import ValidationError

from switchboard.settings import Settings

EXIT_USAGE = 2


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
