"""channel business_account_id and auto_answer_callbacks

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-03 11:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = ('channels',)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('channels', sa.Column('business_account_id', sa.String(length=200), nullable=True))
    op.add_column('channels', sa.Column('auto_answer_callbacks', sa.Boolean(), server_default='true', nullable=False))


def downgrade() -> None:
    op.drop_column('channels', 'auto_answer_callbacks')
    op.drop_column('channels', 'business_account_id')
