"""The catalog as phases 1-3 left it (commit 4f7e6ca).

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


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer, primary_key=True)


def upgrade() -> None:
    now = [sa.Column("created_at", sa.DateTime, nullable=False)]
    op.create_table("patient", _id(), sa.Column("orthanc_id", sa.String, nullable=False),
                    sa.Column("patient_id", sa.String), sa.Column("sex", sa.String),
                    sa.Column("birth_date", sa.Date))
    op.create_index("ix_patient_orthanc_id", "patient", ["orthanc_id"], unique=True)
    op.create_index("ix_patient_patient_id", "patient", ["patient_id"])
    op.create_table("study", _id(), sa.Column("orthanc_id", sa.String, nullable=False),
                    sa.Column("study_uid", sa.String, nullable=False),
                    sa.Column("patient_pk", sa.Integer, sa.ForeignKey("patient.id"), nullable=False),
                    sa.Column("study_date", sa.Date), sa.Column("study_description", sa.String),
                    sa.Column("age_years", sa.Float))
    op.create_index("ix_study_study_uid", "study", ["study_uid"], unique=True)
    op.create_index("ix_study_orthanc_id", "study", ["orthanc_id"], unique=True)
    op.create_index("ix_study_patient_pk", "study", ["patient_pk"])
    op.create_table(
        "series", _id(), sa.Column("orthanc_id", sa.String, nullable=False),
        sa.Column("series_uid", sa.String, nullable=False),
        sa.Column("study_pk", sa.Integer, sa.ForeignKey("study.id"), nullable=False),
        sa.Column("study_uid", sa.String, nullable=False), sa.Column("orthanc_state", sa.String),
        *(sa.Column(n, sa.String) for n in ("modality", "sop_class_uid", "body_part",
                                             "series_description", "protocol_name",
                                             "manufacturer", "model")),
        *(sa.Column(n, sa.Float) for n in ("field_strength", "kvp", "slice_thickness",
                                            "pixel_spacing")),
        sa.Column("rows", sa.Integer), sa.Column("columns", sa.Integer),
        sa.Column("num_instances", sa.Integer, nullable=False),
        sa.Column("contrast_agent", sa.String), sa.Column("contrast", sa.Boolean, nullable=False),
        sa.Column("transfer_syntax", sa.String), sa.Column("study_date", sa.Date),
        sa.Column("patient_sex", sa.String), sa.Column("age_years", sa.Float),
        sa.Column("geometry_consistent", sa.Boolean), sa.Column("uniform_spacing", sa.Boolean),
        sa.Column("slice_spacing", sa.Float),
        sa.Column("missing_slices", sa.Integer, nullable=False),
        sa.Column("status", sa.String, nullable=False), sa.Column("source_series_uid", sa.String),
        sa.Column("ingested_at", sa.DateTime, nullable=False))
    for name, cols, unique in (("orthanc_id", ["orthanc_id"], True),
                               ("series_uid", ["series_uid"], True),
                               ("modality", ["modality"], False), ("study_pk", ["study_pk"], False),
                               ("body_part", ["body_part"], False),
                               ("modality_date", ["modality", "study_date"], False),
                               ("study_uid", ["study_uid"], False),
                               ("source_series_uid", ["source_series_uid"], False)):
        op.create_index(f"ix_series_{name}", "series", cols, unique=unique)
    op.create_table("instance", _id(), sa.Column("orthanc_id", sa.String, nullable=False, unique=True),
                    sa.Column("sop_instance_uid", sa.String, nullable=False),
                    sa.Column("series_pk", sa.Integer, sa.ForeignKey("series.id"), nullable=False),
                    sa.Column("instance_number", sa.Integer), sa.Column("sop_class_uid", sa.String),
                    sa.Column("transfer_syntax", sa.String), sa.Column("position_z", sa.Float))
    op.create_index("ix_instance_sop_instance_uid", "instance", ["sop_instance_uid"])
    op.create_index("ix_instance_series_pk", "instance", ["series_pk"])
    op.create_table("finding", _id(),
                    sa.Column("series_pk", sa.Integer, sa.ForeignKey("series.id"), nullable=False),
                    sa.Column("instance_orthanc_id", sa.String),
                    sa.Column("code", sa.String, nullable=False),
                    sa.Column("severity", sa.String, nullable=False), sa.Column("message", sa.Text))
    op.create_index("ix_finding_series_pk", "finding", ["series_pk"])
    op.create_index("ix_finding_code", "finding", ["code"])
    op.create_table("watcherstate", sa.Column("name", sa.String, primary_key=True),
                    sa.Column("last_seq", sa.Integer, nullable=False),
                    sa.Column("runs_started", sa.Integer, nullable=False),
                    sa.Column("active_run", sa.String),
                    sa.Column("updated_at", sa.DateTime, nullable=False))
    op.create_table("settlingseries", sa.Column("series_orthanc_id", sa.String, primary_key=True),
                    sa.Column("seen_at", sa.DateTime, nullable=False))
    op.create_table("ingestrequest", _id(),
                    sa.Column("series_orthanc_id", sa.String, nullable=False),
                    sa.Column("orthanc_state", sa.String, nullable=False),
                    sa.Column("reason", sa.String, nullable=False),
                    sa.Column("status", sa.String, nullable=False), sa.Column("batch", sa.Integer),
                    sa.Column("flow_run_id", sa.String),
                    sa.Column("attempts", sa.Integer, nullable=False), sa.Column("error", sa.Text),
                    *now, sa.Column("updated_at", sa.DateTime, nullable=False),
                    sa.UniqueConstraint("series_orthanc_id", "orthanc_state"))
    op.create_index("ix_ingestrequest_series_orthanc_id", "ingestrequest", ["series_orthanc_id"])
    op.create_index("ix_ingestrequest_batch", "ingestrequest", ["batch"])
    op.create_index("ix_ingestrequest_status", "ingestrequest", ["status"])
    op.create_table("cohort", sa.Column("name", sa.String, primary_key=True),
                    sa.Column("description", sa.String), sa.Column("definition", sa.Text),
                    sa.Column("content_hash", sa.String, nullable=False),
                    sa.Column("created_at", sa.DateTime, nullable=False))
    op.create_index("ix_cohort_content_hash", "cohort", ["content_hash"])
    op.create_table("result", _id(), sa.Column("kind", sa.String, nullable=False),
                    sa.Column("source_series_uid", sa.String, nullable=False),
                    sa.Column("algorithm", sa.String, nullable=False),
                    sa.Column("version", sa.String, nullable=False),
                    sa.Column("orthanc_id", sa.String, nullable=False),
                    sa.Column("sop_instance_uid", sa.String, nullable=False),
                    sa.Column("series_uid", sa.String, nullable=False), sa.Column("detail", sa.Text),
                    sa.Column("created_at", sa.DateTime, nullable=False),
                    sa.UniqueConstraint("kind", "source_series_uid", "algorithm", "version"))
    op.create_index("ix_result_kind", "result", ["kind"])
    op.create_index("ix_result_source_series_uid", "result", ["source_series_uid"])
    op.create_table("feature", _id(),
                    sa.Column("result_pk", sa.Integer, sa.ForeignKey("result.id"), nullable=False),
                    sa.Column("source_series_uid", sa.String, nullable=False),
                    sa.Column("segment_number", sa.Integer, nullable=False),
                    sa.Column("segment_label", sa.String, nullable=False),
                    sa.Column("feature", sa.String, nullable=False),
                    sa.Column("value", sa.Float, nullable=False),
                    sa.Column("unit", sa.String, nullable=False))
    op.create_index("ix_feature_feature", "feature", ["feature"])
    op.create_index("ix_feature_source_series_uid", "feature", ["source_series_uid"])
    op.create_index("ix_feature_result_pk", "feature", ["result_pk"])


def downgrade() -> None:
    for table in ("feature", "result", "cohort", "ingestrequest", "settlingseries", "watcherstate",
                  "finding", "instance", "series", "study", "patient"):
        op.drop_table(table)
