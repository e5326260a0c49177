"""action run claimed_by (who runs the current attempt); the knowledge base's identity

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 10:00:00.000000

Adds ``action_run.claimed_by``: the process that claimed the current or last
attempt (host, boot id, pid and process start time). Reconciliation at the
start of a tick tells a run left ``running`` by a dead process from one still
running by it. Existing rows keep null (claimer unknown: such a run is
reconciled from the orchestrator's state or its timeout, as before). Only a
nullable column is added, so existing rows need no rewrite.

Adds ``knowledge_base`` with one row: a random UUID naming this knowledge
base, so the idempotency keys it gives Prefect (``mape-decision-<id>@<uuid>``)
cannot meet another knowledge base's on a shared Prefect server.
"""
import uuid
from datetime import datetime, timezone

from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('action_run', schema=None) as batch_op:
        batch_op.add_column(sa.Column('claimed_by', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True))
    table = op.create_table('knowledge_base',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instance', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('instance')
    )
    op.bulk_insert(table, [{'id': 1, 'instance': str(uuid.uuid4()), 'created_at': datetime.now(timezone.utc)}])


def downgrade() -> None:
    op.drop_table('knowledge_base')
    with op.batch_alter_table('action_run', schema=None) as batch_op:
        batch_op.drop_column('claimed_by')
