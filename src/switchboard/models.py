"""Every ORM model, imported in one place so Alembic sees the whole metadata."""

from apikeys.models import ApiKey
from channels.models import Channel
from infra.db import Base

__all__ = ["ApiKey", "Base", "Channel"]
