"""The summary of a segment-and-quantify run: a table per case and a sheet of SEG overlays."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

from prefect import task
from prefect.artifacts import create_image_artifact, create_table_artifact
from sqlmodel import col, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import DerivedResult
from radflow.runtime import site_runtime
from radflow.types import ReportRef, SegmentationRef, SeriesRef

KEY_FEATURES = {"original_shape_VoxelVolume": ("ml", 1e-3), "original_firstorder_Mean": ("HU", 1.0)}


def _base(ref: SeriesRef, status: str, reason: str) -> dict[str, Any]:
    return {"series": ref.description or ref.series_uid[-12:], "series_uid": ref.series_uid,
            "orthanc_id": ref.orthanc_id, "status": status, "reason": reason}


def case_row(ref: SeriesRef, seg: SegmentationRef, report: ReportRef) -> dict[str, Any]:
    """One line of the summary: the case, its results, and key features per organ."""
    row = _base(ref, "ok", "")
    row.update({"seg_result": seg.result_id, "sr_result": report.result_id,
                "cached": seg.cached and report.cached})
    for r in report.features.rows:
        if r["feature"] in KEY_FEATURES:
            unit, scale = KEY_FEATURES[r["feature"]]
            row[f"{r['segment_label']} {unit}"] = round(r["value"] * scale, 1)
    return row


def reviewed_row(ref: SeriesRef, seg: SegmentationRef, reviewed: Any) -> dict[str, Any]:
    """The summary line of a case that a review stopped: rejected, or expired and excluded."""
    status = "rejected" if reviewed.decision == "reject" else "expired"
    row = _base(ref, status, reviewed.comment or f"review: {reviewed.decision}")
    row.update({"seg_result": seg.result_id, "review": reviewed.decision,
                "reviewer": reviewed.reviewer, "cached": False})
    return row


def failed_row(ref: SeriesRef, reason: str) -> dict[str, Any]:
    """The summary line of a case that failed, with its reason."""
    return _base(ref, "failed", reason)


def contact_sheet(thumbnails: list[tuple[str, str]]) -> bytes:
    """A PNG grid of (caption, base64 PNG) thumbnails."""
    from PIL import Image, ImageDraw

    images = [(c, Image.open(io.BytesIO(base64.b64decode(b)))) for c, b in thumbnails]
    size = images[0][1].size[0]
    columns = min(4, len(images))
    rows = (len(images) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * size, rows * (size + 14)), "black")
    draw = ImageDraw.Draw(sheet)
    for k, (caption, image) in enumerate(images):
        x, y = (k % columns) * size, (k // columns) * (size + 14)
        sheet.paste(image, (x, y + 14))
        draw.text((x + 3, y + 1), caption[:24], fill="white")
    buffer = io.BytesIO()
    sheet.save(buffer, format="PNG")
    return buffer.getvalue()


@task(name="pipeline-report")
def pipeline_report(rows: list[dict[str, Any]], model: str, site: str | None = None) -> int:
    """Publish the per-case table and the overlay sheet of the run; returns #thumbnails."""
    table = [{k: v for k, v in r.items() if k not in ("seg_result", "sr_result", "orthanc_id")}
             for r in rows]
    create_table_artifact(table=table, key="segment-and-quantify",
                          description=f"{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} "
                                      f"cases segmented and quantified ({model})")
    captions = {r["seg_result"]: r["series"] for r in rows if r.get("seg_result")}
    thumbnails = []
    with session_scope(site_runtime(site).catalog_url) as session:
        for result in session.exec(select(DerivedResult).where(
                col(DerivedResult.id).in_(list(captions)))):
            thumbnail = json.loads(result.detail).get("thumbnail")
            if thumbnail:
                thumbnails.append((captions[result.id], thumbnail))
    if thumbnails:
        png = base64.b64encode(contact_sheet(thumbnails)).decode()
        create_image_artifact(image_url=f"data:image/png;base64,{png}", key="seg-overlays",
                              description="SEG overlays (axial slice with the most segmented voxels)")
    return len(thumbnails)
