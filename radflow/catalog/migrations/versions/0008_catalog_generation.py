"""The catalog's generation: a one-row table that triggers bump on every change to ``series``
and ``finding``, so that a columnar copy of the catalog (radflow.cohorts.columns) knows when it
is current.

SQLite has row triggers only (an update in place: cheap). PostgreSQL gets statement triggers
that bump it once per transaction: every update of a row there writes a new version of it, and
thousands in one transaction (a bulk insert is a statement per row) slow each other down.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

TABLES = ("series", "finding")
EVENTS = ("INSERT", "UPDATE", "DELETE")
BUMP = "UPDATE catalog_generation SET value = value + 1"


def upgrade() -> None:
    op.create_table(
        "catalog_generation",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("token", sa.String(), nullable=False),
        sa.Column("value", sa.Integer(), nullable=False),
    )
    op.execute(sa.text("INSERT INTO catalog_generation (id, token, value) VALUES (1, :t, 0)")
               .bindparams(t=uuid.uuid4().hex))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION radflow_catalog_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF current_setting('radflow.catalog_changed', true) IS DISTINCT FROM 'yes' "
            f"THEN {BUMP}; PERFORM set_config('radflow.catalog_changed', 'yes', true); END IF; "
            "RETURN NULL; END $$")
        for table in TABLES:
            op.execute(f"CREATE TRIGGER {table}_changed AFTER INSERT OR UPDATE OR DELETE OR "
                       f"TRUNCATE ON {table} FOR EACH STATEMENT "
                       "EXECUTE FUNCTION radflow_catalog_changed()")
        return
    for table in TABLES:
        for event in EVENTS:
            op.execute(f"CREATE TRIGGER {table}_{event.lower()}_changed AFTER {event} ON {table} "
                       f"BEGIN {BUMP}; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.execute(f"DROP TRIGGER {table}_changed ON {table}")
        op.execute("DROP FUNCTION radflow_catalog_changed()")
    else:
        for table in TABLES:
            for event in EVENTS:
                op.execute(f"DROP TRIGGER {table}_{event.lower()}_changed")
    op.drop_table("catalog_generation")
