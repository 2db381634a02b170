"""Synthetic abdominal CT studies with ground-truth organ labels.

``radflow data synth --cases N --out DIR`` writes::

    DIR/manifest.json                 seed, label map, one entry per case
    DIR/case_000/dicom/IM0001.dcm ... one axial CT series (one file per slice)
    DIR/case_000/labels.nii.gz        ground truth (1 liver, 2 spleen, 3 kidney), same geometry
    DIR/case_000/ground-truth/SEG.dcm the same ground truth as a DICOM SEG (``--ground-truth-seg``;
                                      ``radflow data import-labels`` records it as accepted)

The output is deterministic for a seed; cases differ in habitus, organ size and position,
scanner vendor, kVp, slice thickness, contrast and patient demographics.

``--site-profile a|b|c`` (``synthesize(..., site_profile="a")``) makes a synthetic hospital
instead of the mixed set: the profile fixes the vendor, kVp, contrast phase (non-contrast,
arterial, portal-venous) and slice thickness (1.5 / 3 / 5 mm), and sets the noise level and the
population's anatomy (habitus, organ size, organ position), so that a model trained at one site
loses accuracy at another. :mod:`radflow.synth.sites` describes each profile. Without a profile
a seed gives exactly the data it gave before profiles existed.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from radflow.errors import ConfigurationError
from radflow.synth.dicom import write_series
from radflow.synth.phantom import LABELS, Grid, abdomen, render
from radflow.synth.profiles import make_case
from radflow.synth.sites import SITE_PROFILES, SiteProfile, get_site_profile

__all__ = ["SITE_PROFILES", "SiteProfile", "SynthCase", "get_site_profile", "synthesize",
           "synthesize_case"]

COVERAGE_MM = (-85.0, 115.0)  # z range covered by every series (kidneys to liver dome)


@dataclass(frozen=True)
class SynthCase:
    """Where one synthetic case was written and what it holds."""

    name: str
    dicom_dir: Path
    labels_path: Path
    patient_id: str
    study_uid: str
    series_uid: str
    slices: int
    spacing: tuple[float, float, float]  # x, y, z in mm
    manufacturer: str
    contrast: bool
    seg_path: Path | None = None  # the ground truth as a DICOM SEG, when asked for
    site_profile: str | None = None  # the site profile's name (None: the mixed set)
    phase: str | None = None  # the profile's contrast phase (None: the mixed set)

    def record(self, root: Path) -> dict:
        """The case's manifest entry, paths relative to ``root`` (the mixed set's entries
        carry no profile keys: its manifest is as it was)."""
        entry = {**self.__dict__, "dicom_dir": str(self.dicom_dir.relative_to(root)),
                 "labels_path": str(self.labels_path.relative_to(root)),
                 "seg_path": str(self.seg_path.relative_to(root)) if self.seg_path else None}
        if self.site_profile is None:
            del entry["site_profile"], entry["phase"]
        return entry


def case_grid(matrix: int, slice_thickness: float, habitus: float) -> Grid:
    """The grid of one case: the field of view fits the body, slices cover COVERAGE_MM."""
    fov = 2 * 165 * habitus * 1.12
    px = round(fov / matrix, 4)  # exactly what the DS strings of the files will say
    slices = round((COVERAGE_MM[1] - COVERAGE_MM[0]) / slice_thickness)
    origin = (round(-fov / 2 + px / 2, 4), round(8 - fov / 2 + px / 2, 4), COVERAGE_MM[0])
    return Grid(matrix, matrix, slices, px, slice_thickness, origin)


def write_labels(labels: np.ndarray, grid: Grid, path: Path) -> None:
    """Write a label volume (z, y, x) as NIfTI with the series' geometry."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((grid.pixel_spacing, grid.pixel_spacing, grid.slice_spacing))
    image.SetOrigin(grid.origin)
    sitk.WriteImage(image, str(path), useCompression=True)


def write_ground_truth_seg(paths: list[Path], labels: np.ndarray, path: Path) -> Path:
    """Write the ground truth of a case as a DICOM SEG on its image files (slice order)."""
    import pydicom

    from radflow.synth.seg import ground_truth_seg

    seg = ground_truth_seg([pydicom.dcmread(p) for p in paths], labels, LABELS)
    path.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(path, enforce_file_format=True)
    return path


def synthesize_case(out: Path, seed: int, index: int, matrix: int = 128,
                    seg: bool = False, site_profile: str | SiteProfile | None = None,
                    slices: int | None = None) -> SynthCase:
    """Synthesize and write case ``index`` of the set for ``seed`` (with ``seg``, also its
    ground truth as a DICOM SEG; with ``site_profile``, as that synthetic hospital's case;
    with ``slices``, that many slices over the same coverage, thinner or thicker)."""
    site = get_site_profile(site_profile)
    rng = np.random.default_rng([seed, index])
    spec = make_case(seed, index, rng, site)
    if slices is not None:
        spec = dataclasses.replace(spec, slice_thickness=round(
            (COVERAGE_MM[1] - COVERAGE_MM[0]) / slices, 4))
    phantom = abdomen(rng, spec.contrast) if site is None else \
        abdomen(rng, site.phase, site.anatomy, site.noise_sigma)
    grid = case_grid(matrix, spec.slice_thickness, phantom.extra["habitus"])
    hu, labels = render(phantom, grid, rng)
    name = f"case_{index:03d}"
    folder = out / name
    paths = write_series(spec, grid, hu, folder / "dicom")
    write_labels(labels, grid, folder / "labels.nii.gz")
    seg_path = write_ground_truth_seg(paths, labels, folder / "ground-truth" / "SEG.dcm") \
        if seg else None
    return SynthCase(
        name=name,
        dicom_dir=folder / "dicom",
        labels_path=folder / "labels.nii.gz",
        patient_id=spec.patient_id,
        study_uid=spec.study_uid,
        series_uid=spec.series_uid,
        slices=grid.slices,
        spacing=(grid.pixel_spacing, grid.pixel_spacing, grid.slice_spacing),
        manufacturer=spec.vendor.manufacturer,
        contrast=spec.contrast,
        seg_path=seg_path,
        site_profile=site.name if site else None,
        phase=site.phase if site else None,
    )


def synthesize(
    out: str | Path,
    cases: int,
    *,
    seed: int = 0,
    matrix: int = 128,
    start: int = 0,
    seg: bool = False,
    site_profile: str | SiteProfile | None = None,
    progress: Callable[[SynthCase], None] | None = None,
    slices: int | None = None,
) -> list[SynthCase]:
    """Write ``cases`` synthetic CT studies into ``out`` and a ``manifest.json``.

    Args:
        out: output folder (created).
        cases: how many cases.
        seed: the data set's seed: the same seed gives byte-identical pixel data and UIDs.
        matrix: rows and columns of each slice (128 is quick; 512 is clinical size).
        start: index of the first case (to extend a data set).
        seg: also write each case's ground truth as a DICOM SEG (MANUAL segments, the coded
            anatomy of radflow's SEGs) in ``case_NNN/ground-truth/``.
        site_profile: a name in :data:`SITE_PROFILES` (``"a"``, ``"b"``, ``"c"``) or a
            :class:`SiteProfile`: the cases are that synthetic hospital's; None (the default)
            is the mixed set, exactly as before profiles existed.
        progress: called after each case.
        slices: the number of slices of every case (clinical series have 200 to 400 thin
            ones); None: each case's own thickness decides (40 to 67 slices).
    """
    if cases < 1:
        raise ConfigurationError(f"cases must be at least 1, got {cases}",
                                 fix="e.g. radflow data synth --cases 5")
    if not 16 <= matrix <= 1024:
        raise ConfigurationError(f"matrix must be between 16 and 1024 pixels, got {matrix}",
                                 fix="e.g. --matrix 128 (512 is clinical size)")
    site = get_site_profile(site_profile)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for index in range(start, start + cases):
        case = synthesize_case(out, seed, index, matrix, seg, site, slices)
        written.append(case)
        if progress:
            progress(case)
    manifest = {
        "seed": seed,
        "matrix": matrix,
        **({"site_profile": site.name} if site else {}),
        "labels": {str(k): v for k, v in LABELS.items()},
        "cases": [case.record(out) for case in written],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return written
