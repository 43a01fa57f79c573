"""Conversation tables (``conv_*``; Alembic branch ``conversations``).

``conv_opt_outs`` is also read by the outbox (proactive sends to an opted-out contact are
refused): its key is ``(channel_id, contact_key)`` where ``contact_key`` is the recipient as the
outbox would write ``to``, normalised by ``keys.contact_key`` (WhatsApp: digits only).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy import (
    text as sql,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base

CONVERSATION_ID_MAX = 600
CONTACT_KEY_MAX = 300
MESSAGE_ID_MAX = 300


class Conversation(Base):
    """One per canonical ``conversation_id``. An *episode* opens with a customer message when
    none is waiting for a reply (``unanswered_since`` is null) and closes with our reply."""

    __tablename__ = "conv_conversations"
    __table_args__ = (
        UniqueConstraint("channel_id", "contact_key"),
        Index("ix_conv_conversations_activity", "last_activity_at", "conversation_id"),
        Index(
            "ix_conv_conversations_waiting",
            "channel_id",
            postgresql_where=sql("unanswered_since IS NOT NULL AND NOT unanswered_notified"),
        ),
    )

    conversation_id: Mapped[str] = mapped_column(String(CONVERSATION_ID_MAX), primary_key=True)
    channel_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("channels.id", ondelete="CASCADE")
    )
    platform: Mapped[str] = mapped_column(String(32))
    contact_key: Mapped[str] = mapped_column(String(CONTACT_KEY_MAX))
    recipient: Mapped[str] = mapped_column(
        String(CONTACT_KEY_MAX), doc="`to` of a send command that reaches this conversation"
    )
    contact: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    last_inbound_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_outbound_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_reply_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    last_activity_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    unanswered_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    unanswered_notified: Mapped[bool] = mapped_column(Boolean, server_default="false")
    episode: Mapped[int] = mapped_column(Integer, server_default="0")
    last_auto_reply_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )


class TimelineEntry(Base):
    """One inbound or outbound message of a conversation, with its latest state."""

    __tablename__ = "conv_timeline"
    __table_args__ = (
        UniqueConstraint("conversation_id", "direction", "message_id"),
        CheckConstraint("direction IN ('inbound', 'outbound')", name="direction_known"),
        Index("ix_conv_timeline_order", "conversation_id", "occurred_at", "id"),
        Index("ix_conv_timeline_platform_id", "channel_id", "platform_message_id"),
        Index("ix_conv_timeline_recorded", "recorded_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    conversation_id: Mapped[str] = mapped_column(
        String(CONVERSATION_ID_MAX),
        ForeignKey("conv_conversations.conversation_id", ondelete="CASCADE", onupdate="CASCADE"),
    )
    channel_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    direction: Mapped[str] = mapped_column(String(8))
    message_id: Mapped[str] = mapped_column(
        String(MESSAGE_ID_MAX), doc="inbound: platform message id; outbound: outbox message id"
    )
    platform_message_id: Mapped[str | None] = mapped_column(String(MESSAGE_ID_MAX))
    kind: Mapped[str | None] = mapped_column(String(32))
    text: Mapped[str | None] = mapped_column(Text)
    media: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(16))
    automatic: Mapped[bool] = mapped_column(Boolean, server_default="false")
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    occurred_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )


class ChannelSettings(Base):
    """Per-channel conversation settings; no row means every feature is off (defaults)."""

    __tablename__ = "conv_channel_settings"

    channel_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    unanswered_after_seconds: Mapped[float | None] = mapped_column(Float)
    auto_reply: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    opt_out_keywords: Mapped[list[str] | None] = mapped_column(JSONB)
    opt_in_keywords: Mapped[list[str] | None] = mapped_column(JSONB)


class OptOut(Base):
    """A contact that opted out of a channel. Read by the outbox to refuse proactive sends."""

    __tablename__ = "conv_opt_outs"

    channel_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    contact_key: Mapped[str] = mapped_column(String(CONTACT_KEY_MAX), primary_key=True)
    source: Mapped[str] = mapped_column(String(32), doc="keyword | platform | api")
    reason: Mapped[str | None] = mapped_column(String(200))
    opted_out_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )


class PendingEvent(Base):
    """Transactional outbox of this package: conversation events and send commands, staged in
    the transaction that decided them and relayed to Kafka in commit order."""

    __tablename__ = "conv_events"
    __table_args__ = (
        Index("ix_conv_events_unpublished", "id", postgresql_where=sql("published_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    topic: Mapped[str] = mapped_column(String(300))
    key: Mapped[str] = mapped_column(String(CONVERSATION_ID_MAX))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=sql("now()")
    )
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
