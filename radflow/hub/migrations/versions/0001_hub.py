"""The hub database: sites, tokens (hashed), used client assertions, published versions,
studies and jobs (phase 6).

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def _col(name: str, kind, nullable: bool = True, **kw) -> sa.Column:
    return sa.Column(name, kind, nullable=nullable, **kw)


def upgrade() -> None:
    s, dt = sa.String, sa.DateTime
    op.create_table(
        "hub_site", _col("name", s, False, primary_key=True), _col("status", s, False),
        _col("code_hash", s), _col("code_expires", dt), _col("public_key_pem", s),
        _col("fingerprint", s), _col("created_at", dt, False), _col("enrolled_at", dt),
        _col("revoked_at", dt))
    op.create_index("ix_hub_site_status", "hub_site", ["status"])
    op.create_table("hub_token", _col("token_hash", s, False, primary_key=True),
                    _col("site", s, False), _col("expires_at", dt, False))
    op.create_index("ix_hub_token_site", "hub_token", ["site"])
    op.create_table("hub_used_assertion", _col("jti", s, False, primary_key=True),
                    _col("expires_at", dt, False))
    op.create_table(
        "hub_version", _col("hash", s, False, primary_key=True), _col("name", s, False),
        _col("label", s, False), _col("signed", s, False), _col("bundle", sa.LargeBinary, False),
        _col("publisher", s, False), _col("published_at", dt, False))
    op.create_index("ix_hub_version_name", "hub_version", ["name"])
    op.create_table(
        "hub_study", _col("id", s, False, primary_key=True), _col("name", s, False),
        _col("version_hash", s, False), _col("params", s, False), _col("created_at", dt, False),
        _col("deadline", dt, False))
    op.create_table(
        "hub_job", _col("id", s, False, primary_key=True), _col("study_id", s, False),
        _col("site", s, False), _col("version_hash", s, False), _col("params", s, False),
        _col("status", s, False), _col("release", s), _col("refusal", s),
        _col("posted_at", dt))
    for column in ("study_id", "site", "status"):
        op.create_index(f"ix_hub_job_{column}", "hub_job", [column])


def downgrade() -> None:
    for table in ("hub_job", "hub_study", "hub_version", "hub_used_assertion", "hub_token",
                  "hub_site"):
        op.drop_table(table)
