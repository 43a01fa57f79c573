"""gateway: dedup, spool and raw archive tables

Revision ID: g0001
Revises: 0001
Create Date: 2026-11-22 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "g0001"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = ("gateway",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "gateway_dedup",
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_gateway_dedup")),
    )
    op.create_index("ix_gateway_dedup_seen_at", "gateway_dedup", ["seen_at"], unique=False)
    op.create_table(
        "gateway_spool",
        sa.Column("seq", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_id", sa.Uuid(), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("topic", sa.String(length=255), nullable=False),
        sa.Column("conversation_id", sa.Text(), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_gateway_spool")),
    )
    op.create_index("ix_gateway_spool_conversation_id", "gateway_spool", ["conversation_id"], unique=False)
    op.create_table(
        "gateway_archive",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("channel_id", sa.Uuid(), nullable=False),
        sa.Column("platform", sa.String(length=32), nullable=False),
        sa.Column("account_id", sa.String(length=200), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=True),
        sa.Column("headers", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_gateway_archive")),
    )
    op.create_index("ix_gateway_archive_received_at", "gateway_archive", ["received_at"], unique=False)
    op.create_index(
        "ix_gateway_archive_channel_id_received_at",
        "gateway_archive",
        ["channel_id", "received_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_gateway_archive_channel_id_received_at", table_name="gateway_archive")
    op.drop_index("ix_gateway_archive_received_at", table_name="gateway_archive")
    op.drop_table("gateway_archive")
    op.drop_index("ix_gateway_spool_conversation_id", table_name="gateway_spool")
    op.drop_table("gateway_spool")
    op.drop_index("ix_gateway_dedup_seen_at", table_name="gateway_dedup")
    op.drop_table("gateway_dedup")
