"""ix_jobs_queued: PostgreSQL's queued jobs of one kind in claim order (jobs(status, kind, run_after, id)
WHERE status = 'queued'), for a lane's claim and the queue summary; SQLite (one process) claims without it

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-07 09:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.create_index('ix_jobs_queued', 'jobs', ['status', 'kind', 'run_after', 'id'],
                        postgresql_where=sa.text("status = 'queued'"))


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_jobs_queued', table_name='jobs')
