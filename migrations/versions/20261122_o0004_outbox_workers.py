"""outbox workers

Revision ID: o0004
Revises: o0003
Create Date: 2026-11-22 08:17:13.972205
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'o0004'
down_revision: str | None = 'o0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('outbox_workers',
    sa.Column('owner', sa.String(length=200), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('owner', name=op.f('pk_outbox_workers'))
    )


def downgrade() -> None:
    op.drop_table('outbox_workers')
