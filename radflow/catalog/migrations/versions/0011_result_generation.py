"""The results' generation: a second row of ``catalog_generation`` (id 2) that triggers bump on
every change the current-result rule reads (radflow.results.current), so that the columnar copy
of the catalog (radflow.cohorts.columns) can answer ``has_result`` and knows when that part of it
is stale.

What the rule reads: a result's insert and delete, and an update of its status, revision parent,
source result, kind, algorithm or source series; a feature row's insert and delete, and an
update of its result or segment (a result's feature segments are its units). Other updates (a
result's detail, its Orthanc id, a feature's value) do not bump it.

A second row, not the first one: a pipeline run or a review decision then leaves the copy of the
series and findings current, and only the copy's ``has_result`` part is made again (one run of
the rule's SQL, not a read of the whole catalog). The triggers of migration 0008 bump every row,
so a change to a series (which moves the copy's positions) counts here too.

SQLite has row triggers only (an update in place: cheap). PostgreSQL gets statement triggers
that bump it once per transaction (0008 says why).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

# table -> the columns whose update changes what the rule answers
WATCHED = {
    "result": ("status", "parent_id", "derived_from_id", "kind", "algorithm", "source_series_uid"),
    "feature": ("result_pk", "segment_label"),
}
BUMP = "UPDATE catalog_generation SET value = value + 1 WHERE id = 2"


def upgrade() -> None:
    op.execute("INSERT INTO catalog_generation (id, token, value) "
               "SELECT 2, token, 0 FROM catalog_generation WHERE id = 1")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION radflow_results_changed() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN IF current_setting('radflow.results_changed', true) IS DISTINCT FROM 'yes' "
            f"THEN {BUMP}; PERFORM set_config('radflow.results_changed', 'yes', true); END IF; "
            "RETURN NULL; END $$")
        for table, watched in WATCHED.items():
            op.execute(f"CREATE TRIGGER {table}_results_changed AFTER INSERT OR DELETE OR "
                       f"TRUNCATE OR UPDATE OF {', '.join(watched)} ON {table} "
                       "FOR EACH STATEMENT EXECUTE FUNCTION radflow_results_changed()")
        return
    for table, watched in WATCHED.items():
        for event in ("INSERT", "DELETE", f"UPDATE OF {', '.join(watched)}"):
            name = f"{table}_{event.split()[0].lower()}_results_changed"
            op.execute(f"CREATE TRIGGER {name} AFTER {event} ON {table} BEGIN {BUMP}; END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in WATCHED:
            op.execute(f"DROP TRIGGER {table}_results_changed ON {table}")
        op.execute("DROP FUNCTION radflow_results_changed()")
    else:
        for table in WATCHED:
            for event in ("insert", "delete", "update"):
                op.execute(f"DROP TRIGGER {table}_{event}_results_changed")
    op.execute("DELETE FROM catalog_generation WHERE id = 2")
