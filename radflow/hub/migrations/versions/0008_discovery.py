"""Data discovery and access requests: each site's newest collection summary, the
coordinators' access requests and the sites' stewards' decisions on them.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    s, ts = sa.String, sa.DateTime(timezone=True)  # UTC, as every timestamp since 0004
    op.create_table("hub_discovery", sa.Column("site", s, primary_key=True),
                    sa.Column("received_at", ts, nullable=False),
                    sa.Column("summary", s, nullable=False))
    op.create_table("hub_access_request", sa.Column("id", s, primary_key=True),
                    sa.Column("purpose", s, nullable=False), sa.Column("flows", s, nullable=False),
                    sa.Column("cohort", s), sa.Column("cohort_hash", s),
                    sa.Column("sites", s, nullable=False),
                    sa.Column("created_by", s, nullable=False),
                    sa.Column("created_at", ts, nullable=False))
    op.create_table("hub_access_decision", sa.Column("request_id", s, primary_key=True),
                    sa.Column("site", s, primary_key=True),
                    sa.Column("decision", s, nullable=False),
                    sa.Column("decided_by", s, nullable=False),
                    sa.Column("reason", s, nullable=False),
                    sa.Column("decided_at", ts, nullable=False))


def downgrade() -> None:
    for table in ("hub_access_decision", "hub_access_request", "hub_discovery"):
        op.drop_table(table)
