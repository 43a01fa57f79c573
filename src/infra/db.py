"""PostgreSQL access: declarative base with constraint naming, engine and session factories.

Services receive an ``async_sessionmaker`` and never commit on their own: the edge (the endpoint
or the consumer loop) commits *before* it acknowledges anything.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy import DateTime, MetaData, func, text
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from infra.settings import Settings

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> uuid.UUID:
    return uuid.uuid4()


class TimestampMixin:
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now(), nullable=False
    )


CONNECT_TIMEOUT = 10.0
"""Seconds to open a connection (TCP, TLS, authentication) before giving up (asyncpg's own
default is 60 s)."""
COMMAND_TIMEOUT = 30.0
"""Seconds any one statement (and closing a connection) may take. Without it a query on a
connection to a database that stopped answering (a frozen server, a blackholed network path)
waits forever; no statement of ours is meant to run anywhere near this long."""


def create_engine(settings: Settings, *, pool_size: int | None = None) -> AsyncEngine:
    """``hide_parameters``: a failing statement's message (logged with its traceback, and kept
    in exception chains) would otherwise carry its bound values, among them credential
    ciphertext and API-key hashes."""
    return create_async_engine(
        settings.database_url.get_secret_value(),
        pool_size=pool_size or settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_pre_ping=True,
        pool_recycle=1800,
        hide_parameters=True,
        connect_args={"timeout": CONNECT_TIMEOUT, "command_timeout": COMMAND_TIMEOUT},
    )


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
