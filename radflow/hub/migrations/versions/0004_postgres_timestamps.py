"""PostgreSQL: timestamps with time zone, as the models declare (every value is UTC). SQLite
stores both alike: nothing changes there.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from alembic import op

from radflow.catalog.migrate import timestamps_with_time_zone

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

COLUMNS = {
    "hub_api_token": ("created_at", "expires_at", "revoked_at"),
    "hub_job": ("posted_at",),
    "hub_site": ("code_expires", "created_at", "enrolled_at", "revoked_at"),
    "hub_study": ("created_at", "deadline"),
    "hub_token": ("expires_at",),
    "hub_used_assertion": ("expires_at",),
    "hub_version": ("published_at",),
}


def upgrade() -> None:
    timestamps_with_time_zone(op, COLUMNS)


def downgrade() -> None:
    timestamps_with_time_zone(op, COLUMNS, aware=False)
