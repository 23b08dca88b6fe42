"""campaigns, contacts and the do-not-call list

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21 20:50:33.705703
"""

from alembic import op
import sqlalchemy as sa

import outcall.database


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('campaigns',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('settings', sa.JSON(), nullable=False),
    sa.Column('next_from_index', sa.Integer(), nullable=False),
    sa.Column('next_dial_at', outcall.database.UTCDateTime(), nullable=True),
    sa.Column('dial_day', sa.String(length=10), nullable=True),
    sa.Column('dials_today', sa.Integer(), nullable=False),
    sa.Column('created_at', outcall.database.UTCDateTime(), nullable=False),
    sa.Column('updated_at', outcall.database.UTCDateTime(), nullable=False),
    sa.Column('running_since', outcall.database.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('do_not_call',
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('created_at', outcall.database.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('phone')
    )
    op.create_table('contacts',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('campaign_id', sa.String(length=36), nullable=False),
    sa.Column('phone', sa.String(length=20), nullable=False),
    sa.Column('variables', sa.JSON(), nullable=False),
    sa.Column('timezone', sa.String(length=64), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=True),
    sa.Column('state', sa.String(length=10), nullable=False),
    sa.Column('next_attempt_at', outcall.database.UTCDateTime(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('current_call_id', sa.String(length=36), nullable=True),
    sa.Column('last_call_id', sa.String(length=36), nullable=True),
    sa.Column('last_end_reason', sa.String(length=24), nullable=True),
    sa.Column('done_reason', sa.String(length=32), nullable=True),
    sa.Column('updated_at', outcall.database.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index('ix_contacts_due', ['campaign_id', 'state', 'next_attempt_at', 'id'], unique=False)
        batch_op.create_index('ux_contacts_campaign_phone', ['campaign_id', 'phone'], unique=True)

    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('campaign_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('contact_id', sa.BigInteger(), nullable=True))
        batch_op.create_index('ix_calls_campaign_created', ['campaign_id', 'created_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_index('ix_calls_campaign_created')
        batch_op.drop_column('contact_id')
        batch_op.drop_column('campaign_id')

    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index('ux_contacts_campaign_phone')
        batch_op.drop_index('ix_contacts_due')

    op.drop_table('contacts')
    op.drop_table('do_not_call')
    op.drop_table('campaigns')
