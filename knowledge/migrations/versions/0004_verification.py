"""verification of action runs (policy verify)

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 10:00:00.000000

Adds the verification columns to ``action_run``: ``verdict`` (null: not
verified; pending, pass, fail, inconclusive) with an index, ``verify_until``
(end of the bake time), the counts ``verify_true``, ``verify_false`` and
``verify_errors``, ``verify_last`` (the last successful evaluation),
``last_verified_at`` (a replayed tick counts nothing), ``verdict_at``,
``verification`` (the verify spec the run is judged by, the last evaluation,
the outcome) and ``block_lifted_at`` / ``block_lifted_by`` (a person let the
policy act again). Adds ``decision.follows_run_id``: the run whose verdict made
a follow-up decision. Existing runs keep ``verdict`` null (never verified),
counts 0.

Only columns are added, so SQLite alters the tables in place. The downgrade
drops them with plain ``ALTER TABLE ... DROP COLUMN`` (SQLite 3.35 or later),
not with a batch copy: copying ``action_run`` would mean dropping a table that
``model_version`` rows reference, which SQLite's enforced foreign keys refuse.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def _run_columns() -> tuple[sa.Column, ...]:
    return (
        sa.Column('verdict', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=True),
        sa.Column('verify_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('verify_true', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('verify_false', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('verify_errors', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('verify_last', sa.Boolean(), nullable=True),
        sa.Column('last_verified_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('verdict_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('verification', sa.JSON(), nullable=False, server_default='{}'),
        sa.Column('block_lifted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('block_lifted_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    )


def upgrade() -> None:
    with op.batch_alter_table('action_run', schema=None) as batch_op:
        for column in _run_columns():
            batch_op.add_column(column)
        batch_op.create_index(batch_op.f('ix_action_run_verdict'), ['verdict'], unique=False)

    with op.batch_alter_table('decision', schema=None) as batch_op:
        batch_op.add_column(sa.Column('follows_run_id', sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column('decision', 'follows_run_id')
    op.drop_index(op.f('ix_action_run_verdict'), table_name='action_run')
    for column in reversed(_run_columns()):
        op.drop_column('action_run', column.name)
