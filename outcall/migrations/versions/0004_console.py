"""The operator console: outcome corrections, and the indexes its live feed and filters read

calls.outcome_corrections keeps every correction an operator made (who, when, from what).
ix_calls_updated serves the console's change feed (calls changed since a moment);
ix_calls_to_created the calls list filtered by phone number.

Revision ID: 0004
Revises: 0003
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('outcome_corrections', sa.JSON(), nullable=False, server_default='[]'))
    op.create_index('ix_calls_updated', 'calls', ['updated_at'])
    op.create_index('ix_calls_to_created', 'calls', ['to_number', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_calls_to_created', table_name='calls')
    op.drop_index('ix_calls_updated', table_name='calls')
    with op.batch_alter_table('calls') as batch:
        batch.drop_column('outcome_corrections')
