"""outbox channel control: an operator's pause, the automatic suspension on refused
credentials and the circuit breaker's state, per channel (no row: active and closed)

Revision ID: o0008
Revises: o0007
Create Date: 2026-12-03 11:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "o0008"
down_revision: str | None = "o0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_channel_control",
        sa.Column("channel_id", sa.Uuid(), nullable=False),
        sa.Column("sending", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column("since", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("error", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("secrets_digest", sa.String(length=64), nullable=True),
        sa.Column("circuit", sa.String(length=16), server_default="closed", nullable=False),
        sa.Column("circuit_since", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "sending IN ('active', 'paused', 'suspended')", name=op.f("ck_outbox_channel_control_sending_known")
        ),
        sa.CheckConstraint(
            "circuit IN ('closed', 'open', 'half_open')",
            name=op.f("ck_outbox_channel_control_circuit_known"),
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"], ["channels.id"],
            name=op.f("fk_outbox_channel_control_channel_id_channels"), ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("channel_id", name=op.f("pk_outbox_channel_control")),
    )


def downgrade() -> None:
    op.drop_table("outbox_channel_control")
