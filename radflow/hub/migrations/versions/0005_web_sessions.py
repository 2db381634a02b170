"""Server-side sessions of the hub's web app (logout deletes them; an admin lists and revokes them).

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
    timestamp = sa.DateTime(timezone=True)  # UTC, as every timestamp since 0004
    op.create_table(
        "hub_web_session", sa.Column("id", sa.String, primary_key=True),
        sa.Column("token_hash", sa.String, nullable=False),
        sa.Column("sub", sa.String), sa.Column("name", sa.String),
        sa.Column("roles", sa.String, nullable=False), sa.Column("data", sa.Text, nullable=False),
        sa.Column("created_at", timestamp, nullable=False),
        sa.Column("last_seen_at", timestamp, nullable=False),
        sa.Column("expires_at", timestamp, nullable=False),
        sa.Column("user_agent", sa.String), sa.Column("address", sa.String))
    op.create_index("ix_hub_web_session_token_hash", "hub_web_session", ["token_hash"], unique=True)
    op.create_index("ix_hub_web_session_sub", "hub_web_session", ["sub"])
    op.create_index("ix_hub_web_session_expires_at", "hub_web_session", ["expires_at"])


def downgrade() -> None:
    op.drop_table("hub_web_session")
