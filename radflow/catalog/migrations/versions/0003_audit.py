"""The site's audit log: append-only, hash-chained events.

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
    op.create_table(
        "audit_event", sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("time", sa.DateTime, nullable=False), sa.Column("actor", sa.String, nullable=False),
        sa.Column("action", sa.String, nullable=False), sa.Column("subject", sa.String, nullable=False),
        sa.Column("detail", sa.Text), sa.Column("prev_hash", sa.String, nullable=False),
        sa.Column("hash", sa.String, nullable=False))
    op.create_index("ix_audit_event_action", "audit_event", ["action"])
    op.create_index("ix_audit_event_subject", "audit_event", ["subject"])
    op.create_index("ix_audit_event_hash", "audit_event", ["hash"], unique=True)


def downgrade() -> None:
    op.drop_table("audit_event")
