"""pull_requests: what the app last heard of each PR (the PR overview); validations: who triggered each

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 02:00:00.000000
"""
from alembic import op
import sqlalchemy as sa

from bot.models import UTCDateTime


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('validation_states', schema=None) as batch_op:
        batch_op.add_column(sa.Column('triggered_by', sa.String(length=255), nullable=True))
    op.create_table(
        'pull_requests',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('project_id', sa.String(length=32), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('title', sa.Text(), nullable=False),
        sa.Column('author', sa.String(length=255), nullable=True),
        sa.Column('head_sha', sa.String(length=40), nullable=False),
        sa.Column('head_ref', sa.String(length=255), nullable=True),
        sa.Column('base_ref', sa.String(length=255), nullable=True),
        sa.Column('is_fork', sa.Boolean(), nullable=False),
        sa.Column('draft', sa.Boolean(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('opened_at', UTCDateTime(timezone=True), nullable=True),
        sa.Column('updated_at', UTCDateTime(timezone=True), nullable=False),
        sa.Column('closed_at', UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('project_id', 'number', name='uq_pull_request'),
    )
    op.create_index('ix_pull_request_state', 'pull_requests', ['project_id', 'state'])


def downgrade() -> None:
    op.drop_index('ix_pull_request_state', table_name='pull_requests')
    op.drop_table('pull_requests')
    with op.batch_alter_table('validation_states', schema=None) as batch_op:
        batch_op.drop_column('triggered_by')
