"""gateway spool traceparent: the W3C trace context of the webhook a spooled event came from,
sent as the relayed record's ``traceparent`` header (as the direct publish does)

Revision ID: g0002
Revises: g0001
Create Date: 2026-12-03 14:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "g0002"
down_revision: str | None = "g0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("gateway_spool", sa.Column("traceparent", sa.String(length=55), nullable=True))


def downgrade() -> None:
    op.drop_column("gateway_spool", "traceparent")
