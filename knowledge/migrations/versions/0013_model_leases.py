"""model leases and controller members: several controllers share a fleet

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-23 10:00:00.000000

Adds ``model_lease`` (which controller acts for a model, until when, and the
epoch of its holder) and ``controller_member`` (the controllers that share the
fleet, while they renew). A tick becomes one controller's: ``tick.at`` is no
longer unique on its own, ``(controller_id, at)`` is, so controllers that tick
at the same scheduled times each record their tick. Existing ticks keep their
rows (each has the single controller that wrote it).
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('controller_member',
    sa.Column('controller_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('process', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('joined_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('renewed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('controller_id')
    )
    with op.batch_alter_table('controller_member', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_controller_member_expires_at'), ['expires_at'], unique=False)

    op.create_table('model_lease',
    sa.Column('model_id', sa.Integer(), nullable=False),
    sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('acquired_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('renewed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['model_id'], ['managed_model.id'], ),
    sa.PrimaryKeyConstraint('model_id')
    )
    with op.batch_alter_table('model_lease', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_model_lease_holder'), ['holder'], unique=False)

    with op.batch_alter_table('tick', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_tick_at'))
        batch_op.create_index(batch_op.f('ix_tick_at'), ['at'], unique=False)
        batch_op.create_unique_constraint('uq_tick_controller_at', ['controller_id', 'at'])


def downgrade() -> None:
    # fails, as it should, if two controllers recorded a tick at the same time
    with op.batch_alter_table('tick', schema=None) as batch_op:
        batch_op.drop_constraint('uq_tick_controller_at', type_='unique')
        batch_op.drop_index(batch_op.f('ix_tick_at'))
        batch_op.create_index(batch_op.f('ix_tick_at'), ['at'], unique=True)
    with op.batch_alter_table('model_lease', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_model_lease_holder'))
    op.drop_table('model_lease')
    with op.batch_alter_table('controller_member', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_controller_member_expires_at'))
    op.drop_table('controller_member')
