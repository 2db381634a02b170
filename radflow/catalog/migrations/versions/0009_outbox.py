"""The outbox: effects (a post to the hub, a Prefect resume) written with their audit event in one transaction, then performed until acknowledged.

Also: ``review.applied_at`` (the case run applied the recorded decision) and
``federation_job.policy`` (the policy summary the egress gate applied, posted with a release a
steward approves later).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def _time() -> sa.DateTime:
    return sa.DateTime(timezone=op.get_bind().dialect.name == "postgresql")


def upgrade() -> None:
    op.create_table(
        "outbox", sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("subject", sa.String, nullable=False),
        sa.Column("target", sa.String, nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("state", sa.String, nullable=False),
        sa.Column("created_at", _time(), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_attempt_at", _time()),
        sa.Column("last_error", sa.Text),
        sa.Column("done_at", _time()),
        sa.Column("answer", sa.Text))
    for column in ("kind", "subject", "state"):
        op.create_index(f"ix_outbox_{column}", "outbox", [column])
    with op.batch_alter_table("review") as batch:
        batch.add_column(sa.Column("applied_at", _time()))
    # reviews decided before: their runs applied the decision when they recorded it
    op.execute("UPDATE review SET applied_at = decided_at WHERE status <> 'open'")
    with op.batch_alter_table("federation_job") as batch:
        batch.add_column(sa.Column("policy", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("federation_job") as batch:
        batch.drop_column("policy")
    with op.batch_alter_table("review") as batch:
        batch.drop_column("applied_at")
    op.drop_table("outbox")
