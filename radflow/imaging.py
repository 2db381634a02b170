"""Series from Orthanc to a checked volume (SimpleITK) and back to the source datasets.

Plugins get the volume and the source datasets in the volume's slice order, or a
:class:`radflow.errors.DicomInputError` that names the problem and the fix: a wrong modality,
mixed orientations, missing slices, uneven spacing, a non-image object.
"""

from __future__ import annotations

import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.multival import MultiValue

from radflow.catalog.geometry import check_geometry
from radflow.catalog.headers import is_image_storage, sop_class_name
from radflow.errors import DicomInputError
from radflow.orthanc.client import OrthancClient
from radflow.types import SeriesRef
from radflow.uids import derived_uid  # noqa: F401  (re-exported for plugins)


@dataclass
class Volume:
    """A series as a volume, with its source datasets (headers and pixels) in slice order."""

    image: Any  # SimpleITK.Image, HU for CT
    datasets: list[Any]  # pydicom Datasets, slice order = the volume's z order
    ref: SeriesRef


def _as_tags(ds: Any) -> dict[str, str]:
    """The geometry tags of a dataset in the simplified form the catalog's checks read."""
    tags = {}
    for name in ("Rows", "Columns", "PixelSpacing", "ImagePositionPatient",
                 "ImageOrientationPatient", "NumberOfFrames"):
        value = ds.get(name)
        if value is None or value == "":
            continue
        tags[name] = "\\".join(map(str, value)) if isinstance(value, MultiValue | list | tuple) \
            else str(value)
    return tags


def check_volume(datasets: list[Any], ref: SeriesRef, expected_modality: str | None) -> list[int]:
    """Validate the datasets of one series as a volume; returns their indexes in slice order."""
    if not datasets:
        raise DicomInputError(f"series {ref.series_uid} has no instances",
                              fix="push the series again, or remove it from the cohort")
    first = datasets[0]
    modality = str(first.get("Modality", "")).upper()
    if expected_modality and modality != expected_modality.upper():
        raise DicomInputError(
            f"series {ref.series_uid} is {modality or 'without modality'}, the model expects "
            f"{expected_modality}",
            fix=f"select {expected_modality} series (e.g. a cohort with -f modality={expected_modality})")
    if not is_image_storage(str(first.get("SOPClassUID", ""))):
        raise DicomInputError(
            f"series {ref.series_uid} holds {sop_class_name(str(first.get('SOPClassUID', '')))} "
            "objects, not images", fix="select image series")
    ids = [str(i) for i in range(len(datasets))]
    report = check_geometry({i: _as_tags(ds) for i, ds in zip(ids, datasets, strict=True)}, ids,
                            modality)
    problems = [f.message for f in report.findings if f.severity == "error" or f.code in
                ("missing_slices", "non_uniform_spacing", "duplicate_positions")]
    if problems:
        raise DicomInputError(
            f"series {ref.series_uid} is not a regular volume: {'; '.join(problems)}",
            fix="re-export the complete series from the scanner or PACS, or exclude it "
                "(cohort filter uniform_spacing=true)")
    if len(datasets) < 2:
        raise DicomInputError(f"series {ref.series_uid} has a single slice",
                              fix="select volumetric series")
    return sorted(range(len(datasets)), key=lambda k: report.positions[ids[k]])


def load_volume(orthanc: OrthancClient, ref: SeriesRef, expected_modality: str | None = None,
                workdir: Path | None = None, timings: dict[str, float] | None = None) -> Volume:
    """Download a series from Orthanc, check it, and read it as a volume (HU for CT).

    ``timings`` (if given) gets the seconds spent reading the series (``read``: download and
    parse) and building the volume (``volume``).
    """
    import pydicom
    import SimpleITK as sitk

    began = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        paths = orthanc.download_series(ref.orthanc_id, tmp)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            datasets = [pydicom.dcmread(p) for p in paths]
        read = time.perf_counter()
        order = check_volume(datasets, ref, expected_modality)
        ordered = [datasets[k] for k in order]
        files = [str(paths[k]) for k in order]
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise DicomInputError(f"series {ref.series_uid} cannot be decoded: {exc}",
                                  fix="check its transfer syntax (`radflow catalog findings`)") from exc
        for ds in ordered:
            _ = ds.PixelData  # keep pixel data loaded after the files are gone
    if timings is not None:
        timings["read"] = timings.get("read", 0.0) + read - began
        timings["volume"] = timings.get("volume", 0.0) + time.perf_counter() - read
    return Volume(image=image, datasets=ordered, ref=ref)
