"""calls.bot_generation: a warm transfer nobody took hands the call back to a new bot session

Reports from an earlier session are ignored, so its late final report cannot end the call.

Revision ID: 0010
Revises: 0009
"""

from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('bot_generation', sa.Integer(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('calls') as batch:
        batch.drop_column('bot_generation')
