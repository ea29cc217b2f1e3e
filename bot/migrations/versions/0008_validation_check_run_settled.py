"""validations: whether GitHub has been told how each ended (its check run completed), for the recovery

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('validation_states', schema=None) as batch_op:
        batch_op.add_column(sa.Column('check_run_settled', sa.Boolean(), nullable=False, server_default=sa.false()))
    # What ended before this revision was reported by the app of its time: nothing to recover.
    op.execute("UPDATE validation_states SET check_run_settled = TRUE "
               "WHERE status NOT IN ('queued', 'in_progress')")
    op.create_index('ix_validation_unsettled', 'validation_states', ['created_at'],
                    sqlite_where=sa.text('check_run_settled = 0'), postgresql_where=sa.text('NOT check_run_settled'))


def downgrade() -> None:
    op.drop_index('ix_validation_unsettled', table_name='validation_states')
    with op.batch_alter_table('validation_states', schema=None) as batch_op:
        batch_op.drop_column('check_run_settled')
