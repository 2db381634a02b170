"""Geometry checks of a single-frame image series: one orientation, one in-plane grid,
slices evenly spaced along the normal, none missing, none duplicated."""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median
from typing import Any

import numpy as np

from radflow.catalog.tags import FindingRecord, number, numbers, text

REQUIRED_FOR_VOLUMES = ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing")


@dataclass
class GeometryReport:
    consistent: bool | None = None
    uniform: bool | None = None
    spacing: float | None = None
    missing_slices: int = 0
    positions: dict[str, float] = field(default_factory=dict)  # instance id -> mm along normal
    findings: list[FindingRecord] = field(default_factory=list)

    def columns(self) -> dict[str, Any]:
        return {"geometry_consistent": self.consistent, "uniform_spacing": self.uniform,
                "slice_spacing": self.spacing, "missing_slices": self.missing_slices}


def check_geometry(tags_by_instance: dict[str, dict[str, Any]], ids: list[str],
                   modality: str | None) -> GeometryReport:
    """Check the geometry of the image instances ``ids`` (in instance-number order)."""
    report = GeometryReport()
    first = tags_by_instance[ids[0]] if ids else {}
    frames = number(first, "NumberOfFrames") or 1
    if frames > 1:
        report.findings.append(FindingRecord(
            "multi_frame", "info", f"multi-frame object ({int(frames)} frames): per-slice "
            "geometry checks are skipped"))
        return report
    needed = REQUIRED_FOR_VOLUMES if (modality or "") in {"CT", "MR", "PT", "NM"} else ()
    for tag in ("Rows", "Columns", *needed):
        lacking = [i for i in ids if text(tags_by_instance[i], tag) is None]
        if lacking:
            report.findings.append(FindingRecord(
                "missing_tag", "error",
                f"{len(lacking)} of {len(ids)} instance(s) lack {tag}: the series cannot be "
                "read as a volume", lacking[0] if len(lacking) == 1 else None))
    if any(f.code == "missing_tag" for f in report.findings) or len(ids) < 2:
        report.consistent = not report.findings if ids else None
        return report

    grids = {(text(tags_by_instance[i], "Rows"), text(tags_by_instance[i], "Columns"),
              text(tags_by_instance[i], "PixelSpacing")) for i in ids}
    orientations = [numbers(tags_by_instance[i], "ImageOrientationPatient") for i in ids]
    positions = [numbers(tags_by_instance[i], "ImagePositionPatient") for i in ids]
    if any(o is None or len(o) != 6 for o in orientations) or \
            any(p is None or len(p) != 3 for p in positions):
        report.consistent = False
        report.findings.append(FindingRecord("bad_value", "error",
                                             "ImageOrientationPatient/ImagePositionPatient "
                                             "values are malformed"))
        return report
    iop = np.array(orientations, dtype=float)
    ipp = np.array(positions, dtype=float)
    report.consistent = True
    if len(grids) > 1:
        report.consistent = False
        report.findings.append(FindingRecord(
            "inconsistent_geometry", "error",
            f"slices differ in rows/columns/pixel spacing ({len(grids)} different grids)"))
    if np.abs(iop - iop[0]).max() > 1e-4:
        report.consistent = False
        report.findings.append(FindingRecord(
            "inconsistent_geometry", "error", "slices have different orientations"))
        return report

    row, col = iop[0, :3], iop[0, 3:]
    normal = np.cross(row, col)
    with np.errstate(all="ignore"):
        along = ipp @ normal
    if not np.isfinite(along).all() or np.abs(ipp).max() > 1e6:
        report.consistent = False
        report.findings.append(FindingRecord("bad_value", "error",
                                             "ImagePositionPatient values are implausible "
                                             "(beyond a kilometre): the geometry is unusable"))
        return report
    report.positions = {i: float(z) for i, z in zip(ids, along, strict=True)}
    in_plane = np.stack([ipp @ row, ipp @ col], axis=1)
    if np.abs(in_plane - in_plane[0]).max() > 0.5:
        report.consistent = False
        report.findings.append(FindingRecord(
            "inconsistent_geometry", "warning",
            "slice origins shift within the image plane (gantry tilt or a mixed series)"))

    order = np.sort(along)
    steps = np.diff(order)
    duplicates = int((steps < 1e-3).sum())
    if duplicates:
        report.findings.append(FindingRecord(
            "duplicate_positions", "warning",
            f"{duplicates} slice position(s) occur more than once (several acquisitions or "
            "echoes in one series?)"))
    steps = steps[steps >= 1e-3]
    if steps.size == 0:
        return report
    spacing = float(median(steps))
    report.spacing = round(spacing, 4)
    gaps = steps[steps > 1.5 * spacing]
    report.missing_slices = int(sum(round(g / spacing) - 1 for g in gaps))
    if report.missing_slices:
        report.findings.append(FindingRecord(
            "missing_slices", "warning",
            f"{report.missing_slices} slice(s) missing: {len(gaps)} gap(s) of up to "
            f"{gaps.max():.2f} mm where slices are {spacing:.2f} mm apart"))
    regular = steps[steps <= 1.5 * spacing]
    report.uniform = bool(np.abs(regular - spacing).max() <= 0.01 * spacing + 1e-3) \
        and not report.missing_slices
    if not np.abs(regular - spacing).max() <= 0.01 * spacing + 1e-3:
        report.findings.append(FindingRecord(
            "non_uniform_spacing", "warning",
            f"slice spacing varies from {regular.min():.3f} to {regular.max():.3f} mm"))
    return report
