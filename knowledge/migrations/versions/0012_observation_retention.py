"""observation retention

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-26 10:00:00.000000

The retention pass (``knowledge/retention.py``) replaces raw observations
older than its age by one row per series and bucket. This adds what such a
row needs and what the pass needs to find its work:

- ``observation.samples`` (null on every raw row, so existing rows are
  untouched: they stay raw), ``observation.value_min`` and
  ``observation.value_max``;
- ``ix_observation_raw_time``: a partial index of the raw rows by time
  (``WHERE samples IS NULL``, SQLite and PostgreSQL both have them), so a
  pass finds the raw rows past the age without reading the downsampled ones;
- ``retention_state``: one row (id 1, written here) saying when the last pass
  ran, claimed with one conditional UPDATE so that several controllers run a
  pass once per period between them.

Downgrading drops the table, the index and the columns; downsampled rows stay
as rows (their mean in ``value``), without their counts.
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('observation') as batch:
        batch.add_column(sa.Column('samples', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('value_min', sa.Float(), nullable=True))
        batch.add_column(sa.Column('value_max', sa.Float(), nullable=True))
    op.create_index('ix_observation_raw_time', 'observation', ['time'], unique=False,
                    sqlite_where=sa.text('samples IS NULL'), postgresql_where=sa.text('samples IS NULL'))
    state = op.create_table('retention_state',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('complete', sa.Boolean(), nullable=True),
    sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('report', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.bulk_insert(state, [{'id': 1, 'claimed_by': '', 'report': {}}])


def downgrade() -> None:
    op.drop_table('retention_state')
    op.drop_index('ix_observation_raw_time', table_name='observation')
    with op.batch_alter_table('observation') as batch:
        batch.drop_column('value_max')
        batch.drop_column('value_min')
        batch.drop_column('samples')
