"""calls.channel: a call to a phone, or a test call from the console's browser

Test calls are kept with every other call (same record, transcript and outcome) but left out
of the figures and never tied to a campaign's contact.

Revision ID: 0006
Revises: 0005
"""

from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('channel', sa.String(length=8), nullable=False, server_default='phone'))


def downgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.drop_column('channel')
