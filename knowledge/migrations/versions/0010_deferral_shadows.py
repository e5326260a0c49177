"""deferral shadow searches

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 10:00:00.000000

Adds ``deferral_shadow``: one row per shadow search of live deferral, the
search a deferred action would get, made once an hour for every kind of
search the policies use (``key``: objective, duration and window) whether an
action arrives or not. It holds what the forecast promised (the forecast
means of starting at once and of the chosen window, and the predicted gain)
and, once both windows have passed, what the actual series gave (the
realised gain). The scored rows are the evidence of the forecaster's recent
error that guards deferral (``defer.guard``). One row per key and issue time.

Only a table is created, so existing rows are untouched.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('deferral_shadow',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('issued_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('objective', sa.JSON(), nullable=False),
    sa.Column('earliest', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('latest_start', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('chosen_start', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('due_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('predicted_gain', sa.Float(), nullable=False),
    sa.Column('predicted', sa.JSON(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('realised_gain', sa.Float(), nullable=True),
    sa.Column('actual', sa.JSON(), nullable=False),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('scored_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key', 'issued_at', name='uq_deferral_shadow_key_issued_at')
    )
    op.create_index('ix_deferral_shadow_status_due_at', 'deferral_shadow', ['status', 'due_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_deferral_shadow_status_due_at', table_name='deferral_shadow')
    op.drop_table('deferral_shadow')
