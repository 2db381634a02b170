"""Coordinators' API tokens (hashed), and who started each study.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_api_token", sa.Column("id", sa.String, primary_key=True),
        sa.Column("token_hash", sa.String, nullable=False), sa.Column("name", sa.String,
                                                                      nullable=False),
        sa.Column("role", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("expires_at", sa.DateTime, nullable=False),
        sa.Column("revoked_at", sa.DateTime))
    op.create_index("ix_hub_api_token_token_hash", "hub_api_token", ["token_hash"], unique=True)
    with op.batch_alter_table("hub_study") as batch:
        batch.add_column(sa.Column("started_by", sa.String))


def downgrade() -> None:
    with op.batch_alter_table("hub_study") as batch:
        batch.drop_column("started_by")
    op.drop_table("hub_api_token")
