"""canary promotions

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 10:00:00.000000

Adds ``canary``: one row per candidate that a ``retrain`` promotes to a share
of the serving replicas first (``canary`` in the action's parameters). It is
the canary's progress record: the steps as configured, the current step,
share and replica counts, the step's bake time and verification counts, the
verdict waiting to be acted on, the history of the steps so far, and the
state (running, promoted, aborted). A restarted controller resumes a canary
from this row. ``model_version.stage`` gains the value ``canary`` (a plain
string column: no change to the schema).

Only a table is created, so existing rows are untouched.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('canary',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('action_run_id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('version_id', sa.Integer(), nullable=False),
    sa.Column('champion_version_id', sa.Integer(), nullable=True),
    sa.Column('target', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('steps', sa.JSON(), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('share', sa.Float(), nullable=False),
    sa.Column('replicas', sa.Integer(), nullable=False),
    sa.Column('stable_replicas', sa.Integer(), nullable=False),
    sa.Column('step_started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('step_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('step_verdict', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
    sa.Column('verify_true', sa.Integer(), nullable=False),
    sa.Column('verify_false', sa.Integer(), nullable=False),
    sa.Column('verify_errors', sa.Integer(), nullable=False),
    sa.Column('verify_last', sa.Boolean(), nullable=True),
    sa.Column('last_verified_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('history', sa.JSON(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['action_run_id'], ['action_run.id'], ),
    sa.ForeignKeyConstraint(['champion_version_id'], ['model_version.id'], ),
    sa.ForeignKeyConstraint(['model_id'], ['managed_model.id'], ),
    sa.ForeignKeyConstraint(['version_id'], ['model_version.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('action_run_id')
    )
    op.create_index(op.f('ix_canary_model_id'), 'canary', ['model_id'], unique=False)
    op.create_index(op.f('ix_canary_state'), 'canary', ['state'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_canary_state'), table_name='canary')
    op.drop_index(op.f('ix_canary_model_id'), table_name='canary')
    op.drop_table('canary')
