"""`switchboard migrate`: Alembic upgrade to head, configured in code so it works from any cwd."""

from __future__ import annotations

import os
from pathlib import Path

from alembic import command
from alembic.config import Config

from infra.settings import Settings


def import_service_models() -> None:
    """Register every package's tables in the shared metadata (for autogenerate and checks)."""
    import apikeys.models  # noqa: F401
    import channels.models  # noqa: F401
    import conversations.models  # noqa: F401
    import gateway.models  # noqa: F401
    import outbox.models  # noqa: F401


def migrations_dir() -> Path:
    """The Alembic scripts: ``SWITCHBOARD_MIGRATIONS_DIR``, else ``migrations/`` of the checkout."""
    configured = os.environ.get("SWITCHBOARD_MIGRATIONS_DIR")
    if configured:
        return Path(configured)
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "migrations"
        if (candidate / "env.py").is_file():
            return candidate
    raise RuntimeError(
        "Alembic migrations not found: set SWITCHBOARD_MIGRATIONS_DIR to the migrations folder"
    )


def alembic_config(settings: Settings) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    config.attributes["database_url"] = settings.database_url.get_secret_value()
    return config


def upgrade(settings: Settings, revision: str = "heads") -> None:
    command.upgrade(alembic_config(settings), revision)


def downgrade(settings: Settings, revision: str) -> None:
    command.downgrade(alembic_config(settings), revision)
