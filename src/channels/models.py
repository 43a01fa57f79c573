from __future__ import annotations

import uuid

from sqlalchemy import Boolean, CheckConstraint, Float, LargeBinary, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from infra.db import Base, TimestampMixin, new_id
from normalizer.platforms import PLATFORMS


class Channel(TimestampMixin, Base):
    __tablename__ = "channels"
    __table_args__ = (
        UniqueConstraint("platform", "account_id"),
        CheckConstraint(
            "platform IN (" + ", ".join(f"'{p}'" for p in PLATFORMS) + ")", name="platform_known"
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    platform: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    account_id: Mapped[str] = mapped_column(String(200))
    secrets: Mapped[bytes] = mapped_column(LargeBinary, doc="Fernet-encrypted JSON credentials")
    api_base_url: Mapped[str | None] = mapped_column(String(500))
    send_rate_per_second: Mapped[float | None] = mapped_column(Float)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default="true")
    business_account_id: Mapped[str | None] = mapped_column(
        String(200), doc="WhatsApp only: the WABA id whose message templates the outbox syncs"
    )
    auto_answer_callbacks: Mapped[bool] = mapped_column(
        Boolean,
        default=True,
        server_default="true",
        doc="Telegram only: answer button presses (answerCallbackQuery) automatically",
    )
