"""The fleet: each site's reports about itself (a row when a report changed) and when its agent
was last heard.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    timestamp = sa.DateTime(timezone=True)  # UTC, as every timestamp since 0004
    with op.batch_alter_table("hub_site") as batch:
        batch.add_column(sa.Column("last_heard", timestamp))
    op.create_table(
        "hub_site_report", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("site", sa.String, nullable=False),
        sa.Column("received_at", timestamp, nullable=False),
        sa.Column("report", sa.String, nullable=False),
        sa.Column("report_hash", sa.String, nullable=False))
    op.create_index("ix_hub_site_report_site", "hub_site_report", ["site"])
    op.create_index("ix_hub_site_report_received_at", "hub_site_report", ["received_at"])


def downgrade() -> None:
    op.drop_table("hub_site_report")
    with op.batch_alter_table("hub_site") as batch:
        batch.drop_column("last_heard")
