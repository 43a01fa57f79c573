"""Outbox tables. One row per accepted send command; the worker moves it through its states.

States (only forward): queued → sending → sent → delivered → read; retrying loops back to
sending; failed, dead and cancelled are terminal. ``seq`` orders messages of one conversation
(``conversation_key`` = ``channel_id:recipient``) for FIFO delivery.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
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
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base, TimestampMixin, new_id
from outbox.contracts import COMMAND_ID_MAX, RECIPIENT_MAX, REPLY_TO_MAX

PLATFORM_MESSAGE_ID_MAX = 300
TRACEPARENT_MAX = 55
"""A W3C ``traceparent``, version 00."""
CONVERSATION_KEY_MAX = 300
"""``channel_id:recipient``: a uuid, a colon and up to ``RECIPIENT_MAX`` characters fit."""

MESSAGE_STATES = (
    "queued",
    "sending",
    "retrying",
    "sent",
    "delivered",
    "read",
    "failed",
    "dead",
    "cancelled",
)
TERMINAL_STATES = frozenset({"failed", "dead", "cancelled"})
"""No further delivery attempt. ``sent``/``delivered``/``read`` are also done for the worker."""


class OutboxMessage(TimestampMixin, Base):
    __tablename__ = "outbox_messages"
    __table_args__ = (
        CheckConstraint(
            "state IN (" + ", ".join(f"'{s}'" for s in MESSAGE_STATES) + ")", name="state_known"
        ),
        CheckConstraint("source IN ('api', 'kafka')", name="source_known"),
        CheckConstraint("lane IN ('reply', 'bulk')", name="lane_known"),
        Index(
            "ix_outbox_messages_proactive",
            "proactive_key",
            "created_at",
            postgresql_where=text("proactive_key IS NOT NULL"),
        ),
        Index(
            "ix_outbox_messages_due",
            "next_attempt_at",
            postgresql_where=text("state IN ('queued', 'retrying')"),
        ),
        Index(
            "ix_outbox_messages_pending_conversation",
            "conversation_key",
            "seq",
            postgresql_where=text("state IN ('queued', 'sending', 'retrying')"),
        ),
        Index("ix_outbox_messages_channel_created", "channel_id", "created_at"),
        Index("ix_outbox_messages_state_created", "state", "created_at"),
        Index("ix_outbox_messages_platform_message_id", "platform_message_id"),
        Index(
            "ix_outbox_messages_lease",
            "lease_expires_at",
            postgresql_where=text("state = 'sending'"),
        ),
        Index(
            "ix_outbox_messages_pending_platform",
            "platform",
            "state",
            "created_at",
            postgresql_where=text("state IN ('queued', 'sending', 'retrying')"),
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    seq: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    command_id: Mapped[str] = mapped_column(
        String(COMMAND_ID_MAX),
        unique=True,
        doc="Client-chosen id (Idempotency-Key / Kafka command id)",
    )
    request_hash: Mapped[str] = mapped_column(
        String(64), doc="SHA-256 of the canonical command, to tell a replay from a conflict"
    )
    source: Mapped[str] = mapped_column(String(16))
    channel_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("channels.id", ondelete="RESTRICT")
    )
    platform: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(RECIPIENT_MAX))
    conversation_key: Mapped[str] = mapped_column(String(CONVERSATION_KEY_MAX))
    content: Mapped[dict[str, Any]] = mapped_column(JSONB)
    reply_to: Mapped[str | None] = mapped_column(String(REPLY_TO_MAX))
    message_metadata: Mapped[dict[str, Any]] = mapped_column("metadata", JSONB, default=dict)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    retry_base: Mapped[int] = mapped_column(
        Integer,
        default=0,
        server_default="0",
        doc="attempts at the last redrive: the retry schedule restarts from there",
    )
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    not_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    platform_message_id: Mapped[str | None] = mapped_column(String(PLATFORM_MESSAGE_ID_MAX))
    last_error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    traceparent: Mapped[str | None] = mapped_column(
        String(TRACEPARENT_MAX),
        doc="W3C trace context of the command (its intake span, or the client's): the parent "
        "of every send attempt and the trace of the message's lifecycle events",
    )
    lane: Mapped[str] = mapped_column(
        String(8),
        default="bulk",
        server_default="bulk",
        doc="reply | bulk: replies are granted first within the channel's rate (outbox.lanes)",
    )
    proactive_key: Mapped[str | None] = mapped_column(
        String(CONVERSATION_KEY_MAX),
        doc="channel_id:contact key of an accepted proactive message, counted by the channel's "
        "frequency cap (outbox.policy); NULL for replies and refused commands",
    )


class FrequencyCap(Base):
    """At most ``max_messages`` proactive messages per contact per rolling ``period_seconds``
    on a channel (``PUT /v1/channels/{id}/frequency-cap``)."""

    __tablename__ = "outbox_frequency_caps"

    channel_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    max_messages: Mapped[int] = mapped_column(Integer)
    period_seconds: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()"), onupdate=text("now()")
    )


class OutboxAttempt(Base):
    """One delivery attempt, kept for the message's history (API) and for diagnosis."""

    __tablename__ = "outbox_attempts"
    __table_args__ = (Index("ix_outbox_attempts_message", "message_id", "attempt"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    message_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("outbox_messages.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    worker: Mapped[str] = mapped_column(String(200))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    duration_ms: Mapped[float] = mapped_column(Float)
    outcome: Mapped[str] = mapped_column(String(16))
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(String(100))
    error_title: Mapped[str | None] = mapped_column(Text)
    retry_after: Mapped[float | None] = mapped_column(Float)
    response_excerpt: Mapped[str | None] = mapped_column(Text)


class OutboxEvent(Base):
    """Transactional outbox: lifecycle events written with the state change, relayed to Kafka."""

    __tablename__ = "outbox_events"
    __table_args__ = (
        Index("ix_outbox_events_unpublished", "id", postgresql_where=text("published_at IS NULL")),
        Index("ix_outbox_events_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    topic: Mapped[str] = mapped_column(String(300))
    key: Mapped[str] = mapped_column(String(300))
    value: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    published_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    traceparent: Mapped[str | None] = mapped_column(
        String(TRACEPARENT_MAX), doc="Sent as the record's ``traceparent`` header"
    )


class ChannelLease(Base):
    """Which worker owns a channel's sending right now: one owner keeps the rate across
    replicas. ``throttled_until`` carries a platform throttle to whoever owns it next."""

    __tablename__ = "outbox_channel_leases"

    channel_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    owner: Mapped[str] = mapped_column(String(200))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    throttled_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class OutboxWorker(Base):
    """A live delivery worker (heartbeat): the count of live workers sets each one's fair share
    of the active channels (``outbox.delivery.plan_ownership``)."""

    __tablename__ = "outbox_workers"

    owner: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ConversationWindow(Base):
    """Last inbound message per conversation, for WhatsApp's 24-hour customer service window."""

    __tablename__ = "outbox_conversation_windows"

    conversation_key: Mapped[str] = mapped_column(String(CONVERSATION_KEY_MAX), primary_key=True)
    last_inbound_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class PendingReceipt(Base):
    """A platform receipt that arrived before the worker recorded its ``platform_message_id``
    (the platform answered, the outcome batch is not committed yet). Kept until the id appears
    (then applied in arrival order, ``outbox.receipts.settle_pending``) or ``expires_at``."""

    __tablename__ = "outbox_pending_receipts"
    __table_args__ = (
        UniqueConstraint("channel_id", "platform_message_id", "state"),
        Index("ix_outbox_pending_receipts_expires_at", "expires_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    channel_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    """No foreign key: a receipt is held only for an existing channel, and expires anyway."""
    platform_message_id: Mapped[str] = mapped_column(String(PLATFORM_MESSAGE_ID_MAX))
    state: Mapped[str] = mapped_column(String(16))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    """The receipt's ``status.error`` (code, title, detail) for a ``failed`` receipt."""
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("now()")
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class TemplateSync(Base):
    """A WhatsApp channel's template registry is "synced" once a full listing from Graph was
    stored; only then does intake check template sends against it (``outbox.templates``)."""

    __tablename__ = "outbox_template_syncs"

    channel_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    business_account_id: Mapped[str] = mapped_column(String(200))
    """The WABA the listing came from: a changed id on the channel makes the registry stale."""
    synced_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class MessageTemplate(Base):
    """One template (name + language) of a channel's WABA, as Graph lists it."""

    __tablename__ = "outbox_message_templates"

    channel_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(512), primary_key=True)
    language: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(32))
    category: Mapped[str | None] = mapped_column(String(64))
    components: Mapped[list[Any]] = mapped_column(JSONB)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ChannelControl(Base):
    """Whether the outbox sends on a channel (``outbox.control``): no row means ``active``.

    ``paused`` is an operator's hold; ``suspended`` is automatic after the platform refused the
    channel's credentials, and holds only while the channel's encrypted secrets are those it
    was suspended with (``secrets_digest``): a credentials update lifts it at once. A row with
    ``active`` exists once a circuit state was recorded or a hold lifted. ``error`` is the
    platform's code and title (never a secret: senders scrub titles)."""

    __tablename__ = "outbox_channel_control"
    __table_args__ = (
        CheckConstraint("sending IN ('active', 'paused', 'suspended')", name="sending_known"),
        CheckConstraint("circuit IN ('closed', 'open', 'half_open')", name="circuit_known"),
    )

    channel_id: Mapped[uuid.UUID] = mapped_column(
        Uuid, ForeignKey("channels.id", ondelete="CASCADE"), primary_key=True
    )
    sending: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(200))
    since: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=text("now()"))
    error: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    secrets_digest: Mapped[str | None] = mapped_column(String(64))
    circuit: Mapped[str] = mapped_column(String(16), server_default="closed")
    """The owning worker's circuit breaker (``outbox.breaker``), written on each change."""
    circuit_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
