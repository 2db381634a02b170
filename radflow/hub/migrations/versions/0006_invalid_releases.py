"""Releases the hub refuses: a job's ``invalid_release`` keeps the short reason (the rule and
the schema field, never a value) and the refused release's hash (the same post again gets the
same answer).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hub_job") as batch:
        batch.add_column(sa.Column("reason", sa.String))
        batch.add_column(sa.Column("body_hash", sa.String))


def downgrade() -> None:
    with op.batch_alter_table("hub_job") as batch:
        batch.drop_column("body_hash")
        batch.drop_column("reason")
