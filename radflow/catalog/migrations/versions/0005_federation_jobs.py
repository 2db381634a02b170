"""The site agent's jobs (restart-safe federation state).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "federation_job", sa.Column("id", sa.String, primary_key=True),
        sa.Column("study", sa.String), sa.Column("version", sa.String),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("accepted_by", sa.String), sa.Column("flow_run_id", sa.String),
        sa.Column("release", sa.Text), sa.Column("release_hash", sa.String),
        sa.Column("suppressed", sa.Text), sa.Column("decision", sa.String),
        sa.Column("decision_hash", sa.String), sa.Column("decided_by", sa.String),
        sa.Column("outcome", sa.String),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Column("posted_at", sa.DateTime))
    for column in ("study", "state"):
        op.create_index(f"ix_federation_job_{column}", "federation_job", [column])


def downgrade() -> None:
    op.drop_table("federation_job")
