"""A clinician's correction as a new SEG revision (highdicom): the segments of the SEG it
corrects (same labels, codes, tracking UIDs and colours; algorithm type MANUAL), references to
the source series and to the corrected SEG, and UIDs given by the corrected SEG and the content,
so saving the same edit twice stores one object. Its number and name follow
:mod:`radflow.results.revisions`; its creator is the reviewer's name as a DICOM person name."""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np

from radflow.errors import DicomInputError
from radflow.results import revisions
from radflow.uids import derived_uid

REVISION_SERIES_BASE = revisions.SERIES_BASE
NOT_IN_PN = re.compile(r"[\\^=\x00-\x1f]")  # PN's component and group delimiters, controls


def person_name(who: dict[str, Any]) -> str:
    """The log-in's user as a DICOM person name (PN), ``Family^Given``: from the ID token's
    ``family_name`` and ``given_name``, else its display ``name`` (the last word taken as the
    family name), else the user id as a family name."""
    def clean(value: Any) -> str:
        return " ".join(NOT_IN_PN.sub(" ", str(value or "")).split())

    family, given = clean(who.get("family_name")), clean(who.get("given_name"))
    if not (family or given):
        words = clean(who.get("name")).split()
        family, given = (words[-1], " ".join(words[:-1])) if words else \
            (clean(who.get("sub")) or "unknown", "")
    return f"{family[:31]}^{given[:32]}"  # the caret even alone: dciodvfy calls a name
    # without one the retired form (a warning)


def write_revision(source: list[Any], corrected: Any, labels: np.ndarray, *, reviewer: str,
                   revision: int, of: str | None = None) -> Any:
    """The SEG revision.

    Args:
        source: the series' datasets in the label map's slice order.
        corrected: the SEG dataset this revision corrects.
        labels: (z, y, x) segment numbers of ``corrected``.
        reviewer: who made it, a DICOM person name (:func:`person_name`).
        revision: the revision's number in its case (:func:`radflow.results.revisions.next_number`).
        of: what the case reviews (the model's SEG, e.g. ``radflow-abdomen-demo 0.1``; default:
            the corrected SEG's description).

    Raises:
        DicomInputError: the label map is empty or does not fit the series.
    """
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from radflow import __version__
    from radflow.web.render import lab_to_rgb

    of = of or str(corrected.get("SeriesDescription") or "a SEG")
    if labels.shape[0] != len(source):
        raise DicomInputError(f"{labels.shape[0]} label slices for {len(source)} images",
                              fix="save again from the case page")
    by_number = {int(s.SegmentNumber): s for s in corrected.SegmentSequence}
    present = [n for n in sorted(by_number) if (labels == n).any()]
    if not present:
        raise DicomInputError("the corrected segmentation is empty",
                              fix="reject the case instead, or draw the structures")
    remapped = np.zeros(labels.shape, dtype=np.uint8)
    descriptions = []
    for number, old in enumerate(present, start=1):
        seg = by_number[old]
        remapped[labels == old] = number
        lab = seg.get("RecommendedDisplayCIELabValue")
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(seg.SegmentLabel),
            segmented_property_category=hd.sr.CodedConcept.from_dataset(
                seg.SegmentedPropertyCategoryCodeSequence[0]),
            segmented_property_type=hd.sr.CodedConcept.from_dataset(
                seg.SegmentedPropertyTypeCodeSequence[0]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            tracking_uid=seg.get("TrackingUID") or derived_uid("segment", str(seg.SegmentLabel)),
            tracking_id=str(seg.get("TrackingID") or seg.SegmentLabel),
            display_color=hd.color.CIELabColor.from_rgb(*lab_to_rgb(*map(int, lab)))
            if lab is not None else None,
        ))
    digest = hashlib.sha256(remapped.tobytes() + repr(remapped.shape).encode()).hexdigest()
    corrected_sop = str(corrected.SOPInstanceUID)
    revised = hd.seg.Segmentation(
        source_images=source,
        pixel_array=remapped,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid("seg-revision", corrected_sop, digest, "series"),
        series_number=REVISION_SERIES_BASE + revision,
        sop_instance_uid=derived_uid("seg-revision", corrected_sop, digest, "instance"),
        instance_number=1,
        manufacturer="radflow",
        manufacturer_model_name="radflow worklist editor",
        software_versions=f"radflow {__version__}"[:64],
        device_serial_number="radflow",
        content_label=revisions.CONTENT_LABEL,
        content_description=revisions.title(revision, of)[:64],
        content_creator_name=reviewer,
        series_description=revisions.title(revision, of)[:64],
        omit_empty_frames=True,
    )
    prior = Dataset()
    prior.SeriesInstanceUID = str(corrected.SeriesInstanceUID)
    item = Dataset()
    item.ReferencedSOPClassUID = corrected.SOPClassUID
    item.ReferencedSOPInstanceUID = corrected_sop
    prior.ReferencedInstanceSequence = Sequence([item])
    revised.ReferencedSeriesSequence.append(prior)
    return revised
