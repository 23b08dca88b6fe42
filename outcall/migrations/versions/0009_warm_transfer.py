"""calls.transfer_status and calls.transfer_note: how a transfer went, and what the person heard

Revision ID: 0009
Revises: 0008
"""

from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('transfer_status', sa.String(length=16), nullable=True))
        batch.add_column(sa.Column('transfer_note', sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.drop_column('transfer_note')
        batch.drop_column('transfer_status')
