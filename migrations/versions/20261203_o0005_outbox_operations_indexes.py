"""outbox operations indexes: the metrics sampler counts the backlog per platform and state,
and finds its oldest row, with an index-only scan whose size is the backlog, not the history;
retention finds lifecycle events past the window by created_at instead of scanning them all

Revision ID: o0005
Revises: o0004
Create Date: 2026-12-03 10:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "o0005"
down_revision: str | None = "o0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index('ix_outbox_events_created_at', 'outbox_events', ['created_at'], unique=False)
    op.create_index(
        "ix_outbox_messages_pending_platform",
        "outbox_messages",
        ["platform", "state", "created_at"],
        unique=False,
        postgresql_where=sa.text("state IN ('queued', 'sending', 'retrying')"),
    )


def downgrade() -> None:
    op.drop_index('ix_outbox_events_created_at', table_name='outbox_events')
    op.drop_index(
        "ix_outbox_messages_pending_platform",
        table_name="outbox_messages",
        postgresql_where=sa.text("state IN ('queued', 'sending', 'retrying')"),
    )
