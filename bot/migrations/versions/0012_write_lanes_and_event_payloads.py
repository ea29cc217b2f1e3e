"""github_write_lanes: per-installation write pacing shared by every process on PostgreSQL;
event_payloads: events too large for one NOTIFY, read back by the listeners

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07 04:40:00.000000
"""
from alembic import op
import sqlalchemy as sa

from bot.models import UTCDateTime


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'github_write_lanes',
        sa.Column('installation_id', sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column('holder', sa.String(length=64), nullable=True),
        sa.Column('expires_at', UTCDateTime(timezone=True), nullable=True),
        sa.Column('sent_times', sa.JSON(), nullable=False),
        sa.Column('hold_until', UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('installation_id'),
    )
    op.create_table(
        'event_payloads',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
        sa.Column('body', sa.Text(), nullable=False),
        sa.Column('created_at', UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_event_payloads_created_at', 'event_payloads', ['created_at'])


def downgrade() -> None:
    op.drop_index('ix_event_payloads_created_at', table_name='event_payloads')
    op.drop_table('event_payloads')
    op.drop_table('github_write_lanes')
