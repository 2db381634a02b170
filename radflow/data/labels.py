"""Import labels: DICOM SEGs drawn by hand (a site's existing manual segmentations, 3D Slicer's
exports, the ground truth of ``radflow data synth --ground-truth-seg``) stored in the site's
Orthanc and recorded in the catalog as *accepted* segmentation results of their image series,
with "imported ground truth" as the status reason and who imported them as ``status_by``.

From then on they are labels like a reviewed SEG: the current result rule
(:mod:`radflow.results.current`) makes an accepted result current, and a site's training set
takes current SEGs that are accepted or a correction. Each import goes into the site's audit
log (``labels.imported``) in the transaction that records it; importing again changes nothing.

Why a command of its own and not a ``push`` option: ``push`` is transport (what a PACS does,
C-STORE, then a count check), while recording a label as accepted is a decision about the data
that names who made it, and it applies to SEGs that were never pushed by radflow.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radflow.data.push import collect
from radflow.enums import ResultKind, ResultStatus
from radflow.errors import DicomInputError, OrthancError
from radflow.outbox import atomically, audit
from radflow.results import ResultKey, store
from radflow.types import SeriesRef

GROUND_TRUTH_ALGORITHM = "ground-truth"  # the line of an imported label (results.current)
GROUND_TRUTH_VERSION = "1"
IMPORTED_REASON = "imported ground truth"


@dataclass(frozen=True)
class ImportedLabel:
    """One SEG recorded as an accepted label."""

    path: Path
    seg_series_uid: str
    source_series_uid: str
    result_id: int
    new: bool  # False: it had been imported before (nothing changed)


@dataclass
class LabelImport:
    """What an import did: the labels recorded, the files that failed (with the reason and the
    fix), and how many DICOM files were not SEGs (the image files of a synth folder)."""

    imported: list[ImportedLabel] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    not_seg: int = 0


def read_seg_header(path: Path) -> Any | None:
    """The header of a DICOM SEG file (None: the file is another kind of DICOM object)."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    return ds if ds.get("Modality") == "SEG" else None


def source_series(client: Any, ds: Any) -> SeriesRef:
    """The image series a SEG labels: the one series it references that the site's Orthanc
    holds and that is not itself a SEG (a correction references the SEG it corrects too).

    Raises:
        DicomInputError: it references no such series, or several.
    """
    referenced = [str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", [])]
    found = []
    for uid in referenced:
        try:
            ref = client.series_by_uid(uid)
        except OrthancError:
            continue
        if (ref.modality or "").upper() != "SEG":
            found.append(ref)
    if len(found) != 1:
        raise DicomInputError(
            f"SEG {ds.SeriesInstanceUID} references {len(referenced)} series, of which "
            f"{len(found)} image series are in the site's Orthanc; a label needs exactly one",
            fix="push the image series first (`radflow data push DIR`), then import its SEG")
    return found[0]


def import_labels(paths: Iterable[Path], *, client: Any, catalog_url: str,
                  by: str) -> LabelImport:
    """Store the DICOM SEGs among ``paths`` (folders are walked) in Orthanc and record each as
    an accepted label of its image series.

    Args:
        paths: SEG files or folders (other DICOM files are counted and left alone).
        client: the site's Orthanc client.
        catalog_url: the site's catalog.
        by: who imports them (``cli:USER``): the results' ``status_by`` and the audit actor.

    Returns:
        What was recorded and what failed (a failure never stops the others).
    """
    outcome = LabelImport()
    files, _other = collect(list(paths))
    for path in files:
        try:
            ds = read_seg_header(path)
            if ds is None:
                outcome.not_seg += 1
                continue
            outcome.imported.append(_import_one(path, ds, client, catalog_url, by))
        except (DicomInputError, OrthancError) as exc:
            outcome.failed.append(f"{path}: {exc.message} ({exc.fix})")
    return outcome


def _import_one(path: Path, ds: Any, client: Any, catalog_url: str, by: str) -> ImportedLabel:
    source = source_series(client, ds)
    stored = client.upload_bytes(path.read_bytes(), what=f"store of {path.name}")
    sop_uid, seg_uid = str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID)
    key = ResultKey(ResultKind.SEG, (source.series_uid, sop_uid), GROUND_TRUTH_ALGORITHM,
                    GROUND_TRUTH_VERSION)
    segments = {int(s.SegmentNumber): str(s.SegmentLabel) for s in ds.SegmentSequence}
    kinds = sorted({str(s.get("SegmentAlgorithmType", "")) for s in ds.SegmentSequence})

    def work(session: Any) -> tuple[int, bool]:
        new = store.find(session, key) is None
        row = store.record(session, key, source, orthanc_id=stored.instance_id,
                           sop_instance_uid=sop_uid, series_uid=seg_uid,
                           detail={"segments": segments, "algorithm_types": kinds,
                                   "imported": IMPORTED_REASON})
        if row.status == ResultStatus.DRAFT:
            store.set_status(session, row.id, ResultStatus.ACCEPTED, by=by,
                             reason=IMPORTED_REASON)
        if new:
            audit(session, actor=by, action="labels.imported", subject=f"result:{row.key}",
                  detail={"result": row.id, "segments": sorted(segments.values())})
        return row.id, new

    result_id, new = atomically(catalog_url, work)
    return ImportedLabel(path, seg_uid, source.series_uid, result_id, new)
