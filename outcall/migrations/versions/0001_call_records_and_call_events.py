"""call records and call events

Revision ID: 0001
Revises: 
Create Date: 2026-11-21 20:16:18.862700
"""

from alembic import op
import sqlalchemy as sa

import outcall.database


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('call_events',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('type', sa.String(length=32), nullable=False),
    sa.Column('call_id', sa.String(length=36), nullable=False),
    sa.Column('payload', sa.JSON(), nullable=False),
    sa.Column('created_at', outcall.database.UTCDateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', outcall.database.UTCDateTime(), nullable=False),
    sa.Column('delivered_at', outcall.database.UTCDateTime(), nullable=True),
    sa.Column('given_up_at', outcall.database.UTCDateTime(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('call_events', schema=None) as batch_op:
        batch_op.create_index('ix_call_events_due', ['delivered_at', 'given_up_at', 'next_attempt_at'], unique=False)

    op.create_table('calls',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('call_sid', sa.String(length=64), nullable=True),
    sa.Column('to_number', sa.String(length=20), nullable=False),
    sa.Column('from_number', sa.String(length=20), nullable=False),
    sa.Column('variables', sa.JSON(), nullable=False),
    sa.Column('metadata', sa.JSON(), nullable=False),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('timeline', sa.JSON(), nullable=False),
    sa.Column('answered_by', sa.String(length=32), nullable=True),
    sa.Column('voicemail_action', sa.String(length=16), nullable=False),
    sa.Column('transfer_number', sa.String(length=20), nullable=True),
    sa.Column('ring_secs', sa.Float(), nullable=True),
    sa.Column('talk_secs', sa.Float(), nullable=True),
    sa.Column('end_reason', sa.String(length=24), nullable=True),
    sa.Column('outcome', sa.String(length=32), nullable=True),
    sa.Column('outcome_notes', sa.Text(), nullable=True),
    sa.Column('callback_time', sa.String(length=64), nullable=True),
    sa.Column('summary', sa.Text(), nullable=True),
    sa.Column('transcript', sa.JSON(), nullable=False),
    sa.Column('latencies_ms', sa.JSON(), nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('recording_sid', sa.String(length=64), nullable=True),
    sa.Column('recording_url', sa.Text(), nullable=True),
    sa.Column('recording_duration_secs', sa.Integer(), nullable=True),
    sa.Column('report_sequence', sa.Integer(), nullable=False),
    sa.Column('final_report_at', outcall.database.UTCDateTime(), nullable=True),
    sa.Column('claimed_at', outcall.database.UTCDateTime(), nullable=True),
    sa.Column('created_at', outcall.database.UTCDateTime(), nullable=False),
    sa.Column('updated_at', outcall.database.UTCDateTime(), nullable=False),
    sa.Column('answered_at', outcall.database.UTCDateTime(), nullable=True),
    sa.Column('ended_at', outcall.database.UTCDateTime(), nullable=True),
    sa.Column('ended_event_sent', sa.Boolean(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('call_sid')
    )
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.create_index('ix_calls_created', ['created_at', 'id'], unique=False)
        batch_op.create_index('ix_calls_outcome_created', ['outcome', 'created_at'], unique=False)
        batch_op.create_index('ix_calls_status_created', ['status', 'created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index('ix_calls_status_created')
        batch_op.drop_index('ix_calls_outcome_created')
        batch_op.drop_index('ix_calls_created')

    op.drop_table('calls')
    with op.batch_alter_table('call_events', schema=None) as batch_op:
        batch_op.drop_index('ix_call_events_due')

    op.drop_table('call_events')
