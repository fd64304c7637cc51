"""merchant console sessions

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import kassa.db.tables

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('console_sessions',
    sa.Column('session_hash', sa.String(length=64), nullable=False),
    sa.Column('account_id', sa.String(length=40), nullable=False),
    sa.Column('mode', sa.String(length=4), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', kassa.db.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', kassa.db.tables.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', kassa.db.tables.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['accounts.account_id'], name=op.f('fk_console_sessions_account_id_accounts')),
    sa.ForeignKeyConstraint(['key_hash'], ['api_keys.key_hash'], name=op.f('fk_console_sessions_key_hash_api_keys')),
    sa.PrimaryKeyConstraint('session_hash', name=op.f('pk_console_sessions')),
    )
    op.create_index(op.f('ix_console_sessions_account_id_mode'), 'console_sessions', ['account_id', 'mode'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_console_sessions_account_id_mode'), table_name='console_sessions')
    op.drop_table('console_sessions')
