"""ix_jobs_background and ix_jobs_leased: PostgreSQL's claim of the background lane's due jobs in order
(jobs(run_after, id) WHERE status = 'queued' AND kind <> 'webhook') and of expired leases
(jobs(lease_expires_at) WHERE status = 'running'); SQLite (one process) claims without them

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 15:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.create_index('ix_jobs_background', 'jobs', ['run_after', 'id'],
                        postgresql_where=sa.text("status = 'queued' AND kind <> 'webhook'"))
        op.create_index('ix_jobs_leased', 'jobs', ['lease_expires_at'],
                        postgresql_where=sa.text("status = 'running'"))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_jobs_leased', table_name='jobs')
        op.drop_index('ix_jobs_background', table_name='jobs')
