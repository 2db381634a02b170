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

KEY_FEATURES = {"original_shape_VoxelVolume": ("ml", 1e-3), "original_firstorder_Mean": ("HU", 1.0)}


def case_row(ref: Any, status: str, reason: str | None, table: Any) -> dict[str, Any]:
    """One line of the summary: the case, its status, and key features per organ."""
    row = {"series": ref.description or ref.series_uid[-12:], "series_uid": ref.series_uid,
           "status": status, "reason": reason or ""}
    for r in table.rows if table else []:
        if r["feature"] in KEY_FEATURES:
            unit, scale = KEY_FEATURES[r["feature"]]
            row[f"{r['segment_label']} {unit}"] = round(r["value"] * scale, 1)
    return row


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
    create_table_artifact(table=rows, key="segment-and-quantify",
                          description=f"{sum(r['status'] == 'ok' for r in rows)} of {len(rows)} "
                                      f"cases segmented and quantified ({model})")
    rt = site_runtime(site)
    captions = {r["series_uid"]: r["series"] for r in rows if r["status"] == "ok"}
    thumbnails = []
    with session_scope(rt.catalog_url) as session:
        results = session.exec(select(DerivedResult).where(
            DerivedResult.kind == "SEG", DerivedResult.algorithm == model,
            col(DerivedResult.source_series_uid).in_(list(captions)))).all()
        for result in results:
            thumbnail = json.loads(result.detail).get("thumbnail")
            if thumbnail:
                thumbnails.append((captions[result.source_series_uid], thumbnail))
    if thumbnails:
        png = base64.b64encode(contact_sheet(thumbnails)).decode()
        create_image_artifact(image_url=f"data:image/png;base64,{png}", key="seg-overlays",
                              description="SEG overlays (axial slice with the most segmented voxels)")
    return len(thumbnails)
