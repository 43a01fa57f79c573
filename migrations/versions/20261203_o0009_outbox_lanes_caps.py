"""outbox lanes and frequency caps: each message's lane (reply before bulk in a channel's
rate), the contact key of proactive messages (counted by frequency caps, under a per-contact
advisory lock), and the per-channel caps

Revision ID: o0009
Revises: o0008
Create Date: 2026-12-03 11:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "o0009"
down_revision: str | None = "o0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "outbox_messages",
        sa.Column("lane", sa.String(length=8), server_default="bulk", nullable=False),
    )
    op.add_column(
        "outbox_messages", sa.Column("proactive_key", sa.String(length=300), nullable=True)
    )
    op.create_check_constraint(
        op.f("ck_outbox_messages_lane_known"), "outbox_messages", "lane IN ('reply', 'bulk')"
    )
    op.create_index(
        "ix_outbox_messages_proactive",
        "outbox_messages",
        ["proactive_key", "created_at"],
        unique=False,
        postgresql_where=sa.text("proactive_key IS NOT NULL"),
    )
    op.create_table(
        "outbox_frequency_caps",
        sa.Column("channel_id", sa.Uuid(), nullable=False),
        sa.Column("max_messages", sa.Integer(), nullable=False),
        sa.Column("period_seconds", sa.Integer(), nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"],
            name=op.f("fk_outbox_frequency_caps_channel_id_channels"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("pk_outbox_frequency_caps")),
    )


def downgrade() -> None:
    op.drop_table("outbox_frequency_caps")
    op.drop_index(
        "ix_outbox_messages_proactive",
        table_name="outbox_messages",
        postgresql_where=sa.text("proactive_key IS NOT NULL"),
    )
    op.drop_constraint(op.f("ck_outbox_messages_lane_known"), "outbox_messages", type_="check")
    op.drop_column("outbox_messages", "proactive_key")
    op.drop_column("outbox_messages", "lane")
