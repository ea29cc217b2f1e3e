"""deliveries: where each came from; leases for run-once work; app_state; skipped delivery-log entries

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 02:10:00.000000
"""
from alembic import op
import sqlalchemy as sa

from bot.models import UTCDateTime


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=16), nullable=False, server_default='webhook'))
    op.create_table(
        'leases',
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('holder', sa.String(length=64), nullable=False),
        sa.Column('expires_at', UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('name'),
    )
    op.create_table(
        'app_state',
        sa.Column('key', sa.String(length=64), nullable=False),
        sa.Column('value', sa.JSON(), nullable=False),
        sa.Column('updated_at', UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('key'),
    )
    op.create_table(
        'skipped_deliveries',
        sa.Column('guid', sa.String(length=64), nullable=False),
        sa.Column('log_id', sa.BigInteger(), nullable=False),
        sa.Column('event', sa.String(length=64), nullable=True),
        sa.Column('reason', sa.Text(), nullable=False),
        sa.Column('skipped_at', UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('guid'),
    )


def downgrade() -> None:
    op.drop_table('skipped_deliveries')
    op.drop_table('app_state')
    op.drop_table('leases')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('source')
