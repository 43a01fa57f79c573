"""outbox tables

Revision ID: o0001
Revises: 0001
Create Date: 2026-11-22 07:22:49.992822
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = 'o0001'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = ('outbox',)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('outbox_conversation_windows',
    sa.Column('conversation_key', sa.String(length=300), nullable=False),
    sa.Column('last_inbound_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('conversation_key', name=op.f('pk_outbox_conversation_windows'))
    )
    op.create_table('outbox_events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('topic', sa.String(length=300), nullable=False),
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('value', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('published_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_events'))
    )
    op.create_index('ix_outbox_events_unpublished', 'outbox_events', ['id'], unique=False, postgresql_where=sa.text('published_at IS NULL'))
    op.create_table('outbox_channel_leases',
    sa.Column('channel_id', sa.Uuid(), nullable=False),
    sa.Column('owner', sa.String(length=200), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('throttled_until', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['channel_id'], ['channels.id'], name=op.f('fk_outbox_channel_leases_channel_id_channels'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('channel_id', name=op.f('pk_outbox_channel_leases'))
    )
    op.create_table('outbox_messages',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('seq', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('command_id', sa.String(length=200), nullable=False),
    sa.Column('request_hash', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('channel_id', sa.Uuid(), nullable=False),
    sa.Column('platform', sa.String(length=32), nullable=False),
    sa.Column('recipient', sa.String(length=200), nullable=False),
    sa.Column('conversation_key', sa.String(length=300), nullable=False),
    sa.Column('content', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('reply_to', sa.String(length=300), nullable=True),
    sa.Column('metadata', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('not_after', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_owner', sa.String(length=200), nullable=True),
    sa.Column('lease_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('platform_message_id', sa.String(length=300), nullable=True),
    sa.Column('last_error', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("source IN ('api', 'kafka')", name=op.f('ck_outbox_messages_source_known')),
    sa.CheckConstraint("state IN ('queued', 'sending', 'retrying', 'sent', 'delivered', 'read', 'failed', 'dead', 'cancelled')", name=op.f('ck_outbox_messages_state_known')),
    sa.ForeignKeyConstraint(['channel_id'], ['channels.id'], name=op.f('fk_outbox_messages_channel_id_channels'), ondelete='RESTRICT'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_messages')),
    sa.UniqueConstraint('command_id', name=op.f('uq_outbox_messages_command_id')),
    sa.UniqueConstraint('seq', name=op.f('uq_outbox_messages_seq'))
    )
    op.create_index('ix_outbox_messages_channel_created', 'outbox_messages', ['channel_id', 'created_at'], unique=False)
    op.create_index('ix_outbox_messages_due', 'outbox_messages', ['next_attempt_at'], unique=False, postgresql_where=sa.text("state IN ('queued', 'retrying')"))
    op.create_index('ix_outbox_messages_lease', 'outbox_messages', ['lease_expires_at'], unique=False, postgresql_where=sa.text("state = 'sending'"))
    op.create_index('ix_outbox_messages_pending_conversation', 'outbox_messages', ['conversation_key', 'seq'], unique=False, postgresql_where=sa.text("state IN ('queued', 'sending', 'retrying')"))
    op.create_index('ix_outbox_messages_platform_message_id', 'outbox_messages', ['platform_message_id'], unique=False)
    op.create_index('ix_outbox_messages_state_created', 'outbox_messages', ['state', 'created_at'], unique=False)
    op.create_table('outbox_attempts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=True), nullable=False),
    sa.Column('message_id', sa.Uuid(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker', sa.String(length=200), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_ms', sa.Float(), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('http_status', sa.Integer(), nullable=True),
    sa.Column('error_code', sa.String(length=100), nullable=True),
    sa.Column('error_title', sa.Text(), nullable=True),
    sa.Column('retry_after', sa.Float(), nullable=True),
    sa.Column('response_excerpt', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['message_id'], ['outbox_messages.id'], name=op.f('fk_outbox_attempts_message_id_outbox_messages'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox_attempts'))
    )
    op.create_index('ix_outbox_attempts_message', 'outbox_attempts', ['message_id', 'attempt'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_outbox_attempts_message', table_name='outbox_attempts')
    op.drop_table('outbox_attempts')
    op.drop_index('ix_outbox_messages_state_created', table_name='outbox_messages')
    op.drop_index('ix_outbox_messages_platform_message_id', table_name='outbox_messages')
    op.drop_index('ix_outbox_messages_pending_conversation', table_name='outbox_messages', postgresql_where=sa.text("state IN ('queued', 'sending', 'retrying')"))
    op.drop_index('ix_outbox_messages_lease', table_name='outbox_messages', postgresql_where=sa.text("state = 'sending'"))
    op.drop_index('ix_outbox_messages_due', table_name='outbox_messages', postgresql_where=sa.text("state IN ('queued', 'retrying')"))
    op.drop_index('ix_outbox_messages_channel_created', table_name='outbox_messages')
    op.drop_table('outbox_messages')
    op.drop_table('outbox_channel_leases')
    op.drop_index('ix_outbox_events_unpublished', table_name='outbox_events', postgresql_where=sa.text('published_at IS NULL'))
    op.drop_table('outbox_events')
    op.drop_table('outbox_conversation_windows')
