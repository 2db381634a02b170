"""Review steps.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "review", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String, nullable=False),
        sa.Column("flow_run_id", sa.String, nullable=False),
        sa.Column("result_id", sa.Integer, sa.ForeignKey("result.id", ondelete="SET NULL")),
        sa.Column("source_series_uid", sa.String, nullable=False),
        sa.Column("assignee", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("on_expiry", sa.String, nullable=False),
        sa.Column("due_at", sa.DateTime, nullable=False),
        sa.Column("remind_at", sa.DateTime), sa.Column("reminded_at", sa.DateTime),
        sa.Column("decision", sa.String), sa.Column("reviewer", sa.String),
        sa.Column("comment", sa.Text), sa.Column("corrected_seg_uid", sa.String),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("decided_at", sa.DateTime))
    for column, unique in (("key", True), ("flow_run_id", False), ("result_id", False),
                           ("source_series_uid", False), ("assignee", False), ("status", False)):
        op.create_index(f"ix_review_{column}", "review", [column], unique=unique)


def downgrade() -> None:
    op.drop_table("review")
