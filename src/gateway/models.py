"""ORM rows of the gateway (registered on the shared metadata for Alembic).

The hot path does not use the ORM (it talks to PostgreSQL through its own asyncpg pool, see
``gateway.repository``); these classes are the schema of record and serve the replay/admin code.

* ``gateway_dedup``: one row per canonical event id accepted, kept for the dedup window.
* ``gateway_spool``: events that could not be published yet, relayed in ``seq`` order (with
  their webhook's ``traceparent``).
* ``gateway_archive``: raw webhook bodies and the headers needed to re-verify them.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    Uuid,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base


class DedupEntry(Base):
    __tablename__ = "gateway_dedup"
    __table_args__ = (Index("ix_gateway_dedup_seen_at", "seen_at"),)

    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True)
    seen_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )


class SpooledEvent(Base):
    __tablename__ = "gateway_spool"
    __table_args__ = (Index("ix_gateway_spool_conversation_id", "conversation_id"),)

    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    event_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    platform: Mapped[str] = mapped_column(String(32), nullable=False)
    topic: Mapped[str] = mapped_column(String(255), nullable=False)
    conversation_id: Mapped[str] = mapped_column(Text, nullable=False)
    value: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    traceparent: Mapped[str | None] = mapped_column(
        String(55), doc="The webhook's W3C trace context, sent as the relayed record's header"
    )


class ArchivedWebhook(Base):
    __tablename__ = "gateway_archive"
    __table_args__ = (
        Index("ix_gateway_archive_received_at", "received_at"),
        Index("ix_gateway_archive_channel_id_received_at", "channel_id", "received_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=False), primary_key=True)
    channel_id: Mapped[uuid.UUID] = mapped_column(Uuid, nullable=False)
    platform: Mapped[str] = mapped_column(String(32), nullable=False)
    account_id: Mapped[str] = mapped_column(String(200), nullable=False)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    content_type: Mapped[str | None] = mapped_column(String(255))
    headers: Mapped[dict[str, Any]] = mapped_column(
        JSONB, nullable=False, server_default="{}", doc="Signature headers and the signed URL"
    )
    body: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    event_count: Mapped[int] = mapped_column(Integer, nullable=False)
