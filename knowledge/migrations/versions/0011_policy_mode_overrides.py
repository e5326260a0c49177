"""policy mode overrides

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 10:00:00.000000

Adds ``policy_mode_override``: the mode (enforce, dry-run, off) an admin set
for a policy in the knowledge base, over the ``spec.mode`` of its file, with
who set it, when and why. One row per policy while the override is in force
(unique ``policy_name``); clearing it deletes the row. The planner reads the
table once per pass. The history of overrides is the audit trail's
``policy.mode_changed`` events, not this table.

Only a table is created, so existing rows are untouched.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('policy_mode_override',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('policy_name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('mode', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('set_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('set_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('policy_name')
    )


def downgrade() -> None:
    op.drop_table('policy_mode_override')
