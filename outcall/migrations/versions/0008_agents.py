"""agents and agent_versions; calls.agent_id and calls.agent_version

An agent is a named call profile; every change adds a version, and a call keeps the agent and
version it ran, so results compare version against version (ix_calls_agent_created).

Revision ID: 0008
Revises: 0007
"""

from alembic import op
import sqlalchemy as sa

import outcall.database


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'agents',
        sa.Column('id', sa.String(length=36), primary_key=True),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('profile', sa.JSON(), nullable=False),
        sa.Column('created_at', outcall.database.UTCDateTime(), nullable=False),
        sa.Column('updated_at', outcall.database.UTCDateTime(), nullable=False),
    )
    op.create_table(
        'agent_versions',
        sa.Column('agent_id', sa.String(length=36), sa.ForeignKey('agents.id', ondelete='CASCADE'), primary_key=True),
        sa.Column('version', sa.Integer(), primary_key=True),
        sa.Column('name', sa.String(length=200), nullable=False),
        sa.Column('profile', sa.JSON(), nullable=False),
        sa.Column('created_at', outcall.database.UTCDateTime(), nullable=False),
    )
    with op.batch_alter_table('calls') as batch:
        batch.add_column(sa.Column('agent_id', sa.String(length=36), nullable=True))
        batch.add_column(sa.Column('agent_version', sa.Integer(), nullable=True))
    op.create_index('ix_calls_agent_created', 'calls', ['agent_id', 'agent_version', 'created_at'])


def downgrade() -> None:
    op.drop_index('ix_calls_agent_created', table_name='calls')
    with op.batch_alter_table('calls') as batch:
        batch.drop_column('agent_version')
        batch.drop_column('agent_id')
    op.drop_table('agent_versions')
    op.drop_table('agents')
