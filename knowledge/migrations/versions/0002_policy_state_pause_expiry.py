"""policy state (for / keep_firing_for), pauses, approval expiry

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 10:00:00.000000

Adds the ``policy_state`` table (where a policy with ``for`` or
``keep_firing_for`` stands for each model), the ``pause`` table (paused
policies and models), and ``decision.expires_at`` (the deadline of an
``awaiting_approval`` decision) with an index on ``(status, expires_at)`` for
the planner's expiry pass. Existing decisions keep ``expires_at`` null: they
never expire. Batch operations keep SQLite working (it cannot ALTER a table in
place).
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('policy_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('policy_name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('pending_since', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_true_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('firing_since', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['managed_model.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('model_id', 'policy_name', name='uq_policy_state')
    )

    op.create_table('pause',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('paused_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('paused_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('scope', 'name', name='uq_pause_scope_name')
    )

    with op.batch_alter_table('decision', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.create_index('ix_decision_status_expires_at', ['status', 'expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('decision', schema=None) as batch_op:
        batch_op.drop_index('ix_decision_status_expires_at')
        batch_op.drop_column('expires_at')

    op.drop_table('pause')
    op.drop_table('policy_state')
