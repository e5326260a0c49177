"""deferred decisions (policy defer: earliest, deadline)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 17:00:00.000000

Adds ``decision.not_before`` (the action may not start before this time) and
``decision.deadline`` (it should have started by then), both null for a
decision to act at once, as every existing decision did. Only nullable columns
are added, so existing rows need no rewrite.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('decision', schema=None) as batch_op:
        batch_op.add_column(sa.Column('not_before', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('deadline', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column('decision', 'deadline')
    op.drop_column('decision', 'not_before')
