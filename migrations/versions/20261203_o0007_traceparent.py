"""outbox traceparent: the W3C trace context of a command, stored with the message (parent of
its send attempts) and with each staged lifecycle event (its Kafka ``traceparent`` header)

Revision ID: o0007
Revises: o0006
Create Date: 2026-12-03 11:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "o0007"
down_revision: str | None = "o0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("outbox_messages", sa.Column("traceparent", sa.String(length=55), nullable=True))
    op.add_column("outbox_events", sa.Column("traceparent", sa.String(length=55), nullable=True))


def downgrade() -> None:
    op.drop_column("outbox_events", "traceparent")
    op.drop_column("outbox_messages", "traceparent")
