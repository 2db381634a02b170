"""Phase 4: identities follow Orthanc's; results get keys, statuses and lineage; pinned cohorts.

* study and series UIDs are indexed, no longer unique (Orthanc keeps one StudyInstanceUID under
  two patients as two studies, and the catalog must hold both);
* ``result`` is rebuilt: a ``key`` over the inputs, algorithm, version and parameters' hash,
  a status, lineage (``parent_id``, ``derived_from_id``) and the source series in Orthanc.
  Rows of the old schema keep their objects; their key says ``params: legacy``, so the first
  run after the upgrade computes them under the new key and marks the old ones superseded;
* ``feature`` gets the feature's standard ``code`` and cascades with its result;
* ``cohort_pin``: the series a run selected, fixed once.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _key(kind: str, inputs: list[str], algorithm: str, version: str, params: str) -> str:
    # frozen copy of radflow.results.keys.result_key as of this revision
    body = {"algorithm": algorithm, "inputs": inputs, "kind": kind, "params": params,
            "version": version}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def _result_table(name: str) -> sa.Table:
    return sa.Table(
        name, sa.MetaData(),
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("key", sa.String, nullable=False),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("source_series_uid", sa.String, nullable=False),
        sa.Column("source_orthanc_id", sa.String),
        sa.Column("inputs", sa.Text),
        sa.Column("algorithm", sa.String, nullable=False),
        sa.Column("version", sa.String, nullable=False),
        sa.Column("params_hash", sa.String, nullable=False),
        sa.Column("status", sa.String, nullable=False),
        sa.Column("status_by", sa.String),
        sa.Column("status_reason", sa.Text),
        sa.Column("parent_id", sa.Integer, sa.ForeignKey("result.id", ondelete="SET NULL")),
        sa.Column("derived_from_id", sa.Integer, sa.ForeignKey("result.id", ondelete="CASCADE")),
        sa.Column("orthanc_id", sa.String),
        sa.Column("sop_instance_uid", sa.String),
        sa.Column("series_uid", sa.String),
        sa.Column("detail", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )


def upgrade() -> None:
    bind = op.get_bind()
    op.drop_index("ix_study_study_uid", "study")
    op.create_index("ix_study_study_uid", "study", ["study_uid"])
    op.drop_index("ix_series_series_uid", "series")
    op.create_index("ix_series_series_uid", "series", ["series_uid"])

    # keep the old rows, move the old tables aside, create the new ones, copy, drop the old
    old_results = [dict(r._mapping) for r in bind.execute(
        sa.text("SELECT * FROM result").columns(created_at=sa.DateTime))]
    old_features = [dict(r._mapping) for r in bind.execute(sa.text("SELECT * FROM feature"))]
    sources = dict(bind.execute(sa.text("SELECT series_uid, orthanc_id FROM series")).all())
    for index in ("ix_feature_feature", "ix_feature_source_series_uid", "ix_feature_result_pk"):
        op.drop_index(index, "feature")
    for index in ("ix_result_kind", "ix_result_source_series_uid"):
        op.drop_index(index, "result")
    op.drop_table("feature")
    op.drop_table("result")

    result = _result_table("result")
    result.create(bind)
    for column, unique in (("key", True), ("kind", False), ("source_series_uid", False),
                           ("source_orthanc_id", False), ("status", False), ("parent_id", False),
                           ("derived_from_id", False)):
        op.create_index(f"ix_result_{column}", "result", [column], unique=unique)
    feature = sa.Table(
        "feature", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("result_pk", sa.Integer, sa.ForeignKey(result.c.id, ondelete="CASCADE"),
                  nullable=False),
        sa.Column("source_series_uid", sa.String, nullable=False),
        sa.Column("segment_number", sa.Integer, nullable=False),
        sa.Column("segment_label", sa.String, nullable=False),
        sa.Column("feature", sa.String, nullable=False), sa.Column("code", sa.String),
        sa.Column("value", sa.Float, nullable=False), sa.Column("unit", sa.String, nullable=False))
    feature.create(bind)
    for column in ("feature", "source_series_uid", "result_pk"):
        op.create_index(f"ix_feature_{column}", "feature", [column])

    seg_ids = {r["sop_instance_uid"]: r["id"] for r in old_results if r["kind"] == "SEG"}
    now = datetime.now(UTC)
    rows = []
    for r in old_results:
        detail = json.loads(r["detail"] or "{}")
        inputs = [r["source_series_uid"]] + ([detail["seg"]] if detail.get("seg") else [])
        rows.append({
            "id": r["id"], "kind": r["kind"], "source_series_uid": r["source_series_uid"],
            "source_orthanc_id": sources.get(r["source_series_uid"]),
            "inputs": json.dumps(inputs), "algorithm": r["algorithm"], "version": r["version"],
            "params_hash": "legacy", "status": "draft",
            "key": _key(r["kind"], inputs, r["algorithm"], r["version"], "legacy"),
            "derived_from_id": seg_ids.get(detail.get("seg")), "parent_id": None,
            "orthanc_id": r["orthanc_id"], "sop_instance_uid": r["sop_instance_uid"],
            "series_uid": r["series_uid"], "detail": r["detail"] or "{}",
            "created_at": r["created_at"], "updated_at": now,
            "status_by": None, "status_reason": None})
    if rows:
        bind.execute(result.insert(), rows)
    if old_features:
        bind.execute(feature.insert(), [{**f, "code": None} for f in old_features])

    op.create_table(
        "cohort_pin", sa.Column("run_key", sa.String, primary_key=True),
        sa.Column("cohort", sa.String), sa.Column("content_hash", sa.String, nullable=False),
        sa.Column("definition", sa.Text), sa.Column("series", sa.Text),
        sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_index("ix_cohort_pin_content_hash", "cohort_pin", ["content_hash"])


def downgrade() -> None:
    raise NotImplementedError("the phase-4 catalog cannot be downgraded; restore a backup")
