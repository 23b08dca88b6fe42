"""greeting_audio: greetings synthesised while the phone rang, shared by every server process

A call placed by one process may stream to another (WORKERS > 1, several instances); the
greeting it synthesised reaches the other through this table.

Revision ID: 0005
Revises: 0004
"""

from alembic import op
import sqlalchemy as sa

import outcall.database


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'greeting_audio',
        sa.Column('key', sa.String(length=64), primary_key=True),
        sa.Column('audio', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', outcall.database.UTCDateTime(), nullable=False),
    )
    op.create_index('ix_greeting_audio_created_at', 'greeting_audio', ['created_at'])


def downgrade() -> None:
    op.drop_index('ix_greeting_audio_created_at', table_name='greeting_audio')
    op.drop_table('greeting_audio')
