"""outbox retry base

Revision ID: o0002
Revises: o0001
Create Date: 2026-11-22 08:04:49.359510
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'o0002'
down_revision: str | None = 'o0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('outbox_messages', sa.Column('retry_base', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    op.drop_column('outbox_messages', 'retry_base')
