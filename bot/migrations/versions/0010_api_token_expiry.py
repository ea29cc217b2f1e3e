"""dashboard: personal API tokens may expire

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07 03:00:00.000000
"""
from alembic import op
import sqlalchemy as sa

from bot.models import UTCDateTime


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
