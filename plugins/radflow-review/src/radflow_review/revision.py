"""A clinician's correction as a new SEG revision (highdicom): the segments of the SEG it
corrects (same labels, codes, tracking UIDs and colours; algorithm type MANUAL), references to
the source series and to the corrected SEG, and UIDs given by the corrected SEG and the content,
so saving the same edit twice stores one object."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from radflow.errors import DicomInputError
from radflow.uids import derived_uid

REVISION_SERIES_BASE = 9100


def write_revision(source: list[Any], corrected: Any, labels: np.ndarray, *, reviewer: str,
                   revision: int) -> Any:
    """The SEG revision.

    Args:
        source: the series' datasets in the label map's slice order.
        corrected: the SEG dataset this revision corrects.
        labels: (z, y, x) segment numbers of ``corrected``.
        reviewer: the log-in's subject (the content creator).
        revision: the revision's number (1 for the first correction of the model's SEG).

    Raises:
        DicomInputError: the label map is empty or does not fit the series.
    """
    import highdicom as hd
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from radflow import __version__
    from radflow.web.render import lab_to_rgb

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
        content_label="CORRECTION",
        content_description=f"revision {revision} of {corrected.get('SeriesDescription', 'SEG')}"[:64],
        content_creator_name=reviewer.replace("^", " ")[:64],
        series_description=f"SEG revision {revision} ({reviewer})"[:64],
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
