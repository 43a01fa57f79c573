"""outbox pending receipts

Revision ID: o0003
Revises: o0002
Create Date: 2026-11-22 08:12:36.805893
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'o0003'
down_revision: str | None = 'o0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('outbox_pending_receipts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('channel_id', sa.Uuid(), nullable=False),
    sa.Column('platform_message_id', sa.String(length=300), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_pending_receipts')),
    sa.UniqueConstraint('channel_id', 'platform_message_id', 'state', name=op.f('uq_outbox_pending_receipts_channel_id_platform_message_id_state'))
    )
    op.create_index('ix_outbox_pending_receipts_expires_at', 'outbox_pending_receipts', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_pending_receipts_expires_at', table_name='outbox_pending_receipts')
    op.drop_table('outbox_pending_receipts')
