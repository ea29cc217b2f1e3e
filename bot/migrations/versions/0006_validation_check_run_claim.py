"""validations: who may create a validation's check run, claimed in the database (several processes)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa
import bot.models


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('validation_states', schema=None) as batch_op:
        batch_op.add_column(sa.Column('check_run_claimed_by', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('check_run_claimed_at', bot.models.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('validation_states', schema=None) as batch_op:
        batch_op.drop_column('check_run_claimed_at')
        batch_op.drop_column('check_run_claimed_by')
