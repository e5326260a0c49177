"""drop decision's single-column model_id index

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-22 19:50:00.000000

``ix_decision_model_action_time`` (model_id, action, created_at) already
serves every lookup by model; the single-column ``ix_decision_model_id`` only
cost a scattered index write for each of the thousands of decisions a planning
pass stores (measured: about a tenth of the store's time on a 1,000-model
fleet, growing with the table). Dropping an index changes no data.
"""
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('decision', schema=None) as batch_op:
        batch_op.drop_index('ix_decision_model_id')


def downgrade() -> None:
    with op.batch_alter_table('decision', schema=None) as batch_op:
        batch_op.create_index('ix_decision_model_id', ['model_id'], unique=False)
