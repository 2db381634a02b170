"""PostgreSQL: timestamps with time zone, as the models declare (every value is UTC). SQLite
stores both alike: nothing changes there.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from alembic import op

from radflow.catalog.migrate import timestamps_with_time_zone

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

COLUMNS = {
    "audit_event": ("time",),
    "cohort": ("created_at",),
    "cohort_pin": ("created_at",),
    "federation_job": ("received_at", "updated_at", "posted_at"),
    "ingestrequest": ("created_at", "updated_at"),
    "result": ("created_at", "updated_at"),
    "review": ("due_at", "remind_at", "reminded_at", "created_at", "decided_at"),
    "series": ("ingested_at",),
    "settlingseries": ("seen_at",),
    "watcherstate": ("updated_at",),
}


def upgrade() -> None:
    timestamps_with_time_zone(op, COLUMNS)


def downgrade() -> None:
    timestamps_with_time_zone(op, COLUMNS, aware=False)
