"""calls.analysis, calls.analysis_errors: the post-call analysis fields, and why any is empty

Revision ID: 0007
Revises: 0006
"""

from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('analysis', sa.JSON(), nullable=False, server_default='{}'))
        batch.add_column(sa.Column('analysis_errors', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.drop_column('analysis_errors')
        batch.drop_column('analysis')
