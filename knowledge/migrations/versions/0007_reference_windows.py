"""reference windows

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 10:00:00.000000

Adds the ``reference_window`` table: every version of each model's drift
reference (fixed, rolling or reservoir) with its bounds, size, fingerprint
and, for reservoir samples, the rows themselves. Existing models get their
first (fixed) reference at the next tick, as before. No existing row changes.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('reference_window',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('window_start', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('window_end', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('n_rows', sa.Integer(), nullable=False),
    sa.Column('n_seen', sa.Integer(), nullable=False),
    sa.Column('fingerprint', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('sample', sa.LargeBinary(), nullable=True),
    sa.Column('taken_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['managed_model.id'], ),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_version.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('model_id', 'version', name='uq_reference_window_version')
    )
    with op.batch_alter_table('reference_window', schema=None) as batch_op:
        batch_op.create_index('ix_reference_window_model_version_version', ['model_version_id', 'version'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('reference_window', schema=None) as batch_op:
        batch_op.drop_index('ix_reference_window_model_version_version')

    op.drop_table('reference_window')
