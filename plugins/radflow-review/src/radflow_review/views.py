"""The case page's image area: the series in three planes and the SEG as one label volume.

- ``/reviews/{id}/slices/{axis}/{index}.png``: a windowed greyscale slice of the cached stack,
  axial (rows y, columns x), coronal (rows z from the top slice down, columns x) or sagittal
  (rows z from the top slice down, columns y), one pixel per voxel; the page scales coronal and
  sagittal by the spacing. ``/reviews/{id}/slices/{z}.png`` is the axial one (the first route).
- ``/reviews/{id}/geometry.json``: the stack's shape (z, y, x) and spacing in mm.
- ``/reviews/{id}/labels/{seg}.bin``: the SEG as segment numbers on the stack, uint8, z-major
  (``D*H*W`` bytes), gzip-compressed for the transfer. The page holds it once and every view and
  edit works on it; saving sends the edited axial slices to the revision API
  (:func:`radflow_review.web.save_revision`).
- ``/static/reviews/case.js``: the page's script (viewer and editor).

Every route needs a clinical log-in and a review the user may act on (as the case page does);
indices out of range answer 404.
"""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, Response

from radflow.errors import DicomInputError
from radflow.web.auth import User, clinician
from radflow.web.security import RowId
from radflow_review.web import TEMPLATES, _labels, _review, _stack, candidate_segs

router = APIRouter()
STATIC = Path(__file__).parent / "static"
Axis = Literal["axial", "coronal", "sagittal"]


def plane(hu: np.ndarray, axis: str, index: int) -> np.ndarray:
    """One plane of a (z, y, x) volume as it is shown: axial as stored; coronal and sagittal
    with the last slice (the top of the body in an axial CT) as the first row.

    Raises:
        HTTPException: 404 when ``index`` is outside the volume along ``axis``.
    """
    along = {"axial": 0, "coronal": 1, "sagittal": 2}[axis]
    size = hu.shape[along]
    if not 0 <= index < size:
        raise HTTPException(404, f"{axis} slice {index} is outside 0-{size - 1}")
    if axis == "axial":
        return hu[index]
    return hu[::-1, index, :] if axis == "coronal" else hu[::-1, :, index]


def plane_png(request: Request, review_id: int, me: User, axis: str, index: int,
              preset: str | None, c: float | None, w: float | None) -> Response:
    from radflow.web.render import png, window

    row = _review(request, review_id, me)
    stack = _stack(request, row.source_series_uid)
    try:
        centre, width = window(preset, c, w)
    except DicomInputError as exc:
        raise HTTPException(422, exc.message) from exc
    lo = centre - width / 2.0
    hu = plane(stack.hu, axis, index).astype(np.float32)
    grey = np.clip((hu - lo) / width * 255.0, 0, 255).astype(np.uint8)
    return Response(png(np.ascontiguousarray(grey)), media_type="image/png",
                    headers={"Cache-Control": "private, max-age=600"})


@router.get("/reviews/{review_id}/slices/{z}.png")
def slice_image(request: Request, review_id: RowId, z: RowId, preset: str | None = None,
                c: float | None = None, w: float | None = None,
                me: User = Depends(clinician)) -> Response:
    return plane_png(request, review_id, me, "axial", z, preset, c, w)


@router.get("/reviews/{review_id}/slices/{axis}/{index}.png")
def plane_image(request: Request, review_id: RowId, axis: Axis, index: RowId,
                preset: str | None = None, c: float | None = None, w: float | None = None,
                me: User = Depends(clinician)) -> Response:
    return plane_png(request, review_id, me, axis, index, preset, c, w)


@router.get("/reviews/{review_id}/geometry.json")
def geometry(request: Request, review_id: RowId, me: User = Depends(clinician)) -> Response:
    row = _review(request, review_id, me)
    stack = _stack(request, row.source_series_uid)
    return JSONResponse({"shape": list(stack.hu.shape),
                         "spacing": [float(s) for s in stack.spacing]},
                        headers={"Cache-Control": "private, max-age=600"})


@router.get("/reviews/{review_id}/labels/{seg_uid}.bin")
def label_volume(request: Request, review_id: RowId, seg_uid: str,
                 me: User = Depends(clinician)) -> Response:
    """The SEG as segment numbers on the stack: ``D*H*W`` bytes, z-major."""
    row = _review(request, review_id, me)
    if seg_uid not in {s["uid"] for s in candidate_segs(request, row)}:
        raise HTTPException(404, f"{seg_uid} is not a SEG of this case")
    labels = _labels(request, seg_uid, row.source_series_uid).labels
    raw = np.ascontiguousarray(labels, dtype=np.uint8).tobytes()
    headers = {"Cache-Control": "private, no-cache", "X-Shape": ",".join(map(str, labels.shape))}
    if "gzip" in request.headers.get("accept-encoding", ""):
        raw = gzip.compress(raw, compresslevel=1)
        headers["Content-Encoding"] = "gzip"
    return Response(raw, media_type="application/octet-stream", headers=headers)


@router.get("/static/reviews/case.js")
def case_script(me: User = Depends(clinician)) -> Response:
    return FileResponse(STATIC / "case.js", media_type="text/javascript",
                        headers={"Cache-Control": "private, no-cache"})


def pages() -> Any:
    from radflow.web import WebPages

    return WebPages(router=router, templates=TEMPLATES)


__all__ = ["pages", "plane", "router"]
