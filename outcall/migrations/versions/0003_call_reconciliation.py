"""calls.checked_at: when reconciliation last asked Twilio about a call still open

Revision ID: 0003
Revises: 0002
"""

from alembic import op
import sqlalchemy as sa

import outcall.database


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('checked_at', outcall.database.UTCDateTime(), nullable=True))
    op.create_index('ix_call_events_delivered', 'call_events', ['delivered_at'])


def downgrade() -> None:
    op.drop_index('ix_call_events_delivered', table_name='call_events')
    with op.batch_alter_table('calls') as batch:
        batch.drop_column('checked_at')
