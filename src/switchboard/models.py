"""Every ORM model, imported in one place so Alembic sees the whole metadata."""

from switchboard.auth.models import ApiKey
from switchboard.channels.models import Channel
from switchboard.db import Base

__all__ = ["ApiKey", "Base", "Channel"]
