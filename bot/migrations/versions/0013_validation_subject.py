"""validations: what is validated (a PR's head, a merge queue's group or candidate) and the ref naming it

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-10 10:00:00.000000
"""
from alembic import op
import sqlalchemy as sa


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('validation_states', schema=None) as batch_op:
        # Every validation before this revision was of a PR's own head.
        batch_op.add_column(sa.Column('subject', sa.String(length=32), nullable=False,
                                      server_default='pull_request'))
        batch_op.add_column(sa.Column('subject_ref', sa.String(length=255), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('validation_states', schema=None) as batch_op:
        batch_op.drop_column('subject_ref')
        batch_op.drop_column('subject')
