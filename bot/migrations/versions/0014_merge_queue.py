"""merge_queues: each repository base branch's own merge queue, as one document (the pure decider's
state) with a version for compare-and-swap; merge_queue_landings: each PR a candidate landed, so that
landing is idempotent; projects.merge_queue: the queue's settings from the dashboard

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-07 08:00:00.000000
"""
from alembic import op
import sqlalchemy as sa

from bot.models import UTCDateTime


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'merge_queues',
        sa.Column('project_id', sa.String(length=32), nullable=False),
        sa.Column('base_ref', sa.String(length=255), nullable=False),
        sa.Column('state', sa.JSON(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('updated_at', UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id']),
        sa.PrimaryKeyConstraint('project_id', 'base_ref'),
    )
    op.create_table(
        'merge_queue_landings',
        sa.Column('project_id', sa.String(length=32), nullable=False),
        sa.Column('candidate_key', sa.String(length=64), nullable=False),
        sa.Column('pr_number', sa.Integer(), nullable=False),
        sa.Column('merged_sha', sa.String(length=40), nullable=True),
        sa.Column('landed_at', UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['project_id'], ['projects.id']),
        sa.PrimaryKeyConstraint('project_id', 'candidate_key', 'pr_number'),
    )
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.add_column(sa.Column('merge_queue', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_column('merge_queue')
    op.drop_table('merge_queue_landings')
    op.drop_table('merge_queues')
