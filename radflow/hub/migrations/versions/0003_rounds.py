"""Studies in rounds: each job belongs to one round of its study; and the policy summary a
site sends with each result.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("hub_job") as batch:
        batch.add_column(sa.Column("round", sa.Integer, nullable=False, server_default="0"))
        batch.add_column(sa.Column("policy", sa.String))


def downgrade() -> None:
    with op.batch_alter_table("hub_job") as batch:
        batch.drop_column("policy")
        batch.drop_column("round")
