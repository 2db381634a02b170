"""Ground-truth labels as a DICOM Segmentation (highdicom): a person's (or a phantom's) MANUAL
segmentation that a site imports as an accepted label (``radflow data import-labels``).

The segments carry the coded anatomy the nnU-Net plugin's SEGs carry (the SNOMED CT codes of
:mod:`radflow.anatomy`, category "Anatomical Structure"), the overlay colours of radflow's
viewer, and UIDs derived from the source series: writing the same ground truth twice makes the
same object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from radflow import __version__
from radflow.anatomy import ANATOMICAL_STRUCTURE, code_for
from radflow.errors import DicomInputError
from radflow.uids import derived_uid
from radflow.web.render import COLOURS

GROUND_TRUTH_SERIES_NUMBER = 9000
CREATOR = "radflow^synth"  # a DICOM person name (Family^Given): dciodvfy warns without a caret


def ground_truth_seg(source: list[Any], labels: np.ndarray, names: Mapping[int, str], *,
                     creator: str = CREATOR, description: str = "ground truth") -> Any:
    """The SEG of a label volume drawn by hand (algorithm type MANUAL).

    Args:
        source: the image series' datasets, in the label volume's slice order.
        labels: (z, y, x) label values; 0 is background.
        names: label value -> anatomy name (``{1: "liver", 2: "spleen", 3: "kidney"}``); each
            name needs a code in :data:`radflow.anatomy.ANATOMY`.
        creator: who drew it, as a DICOM person name.
        description: the series description (``SEG <description>``).

    Returns:
        The Segmentation dataset (BINARY). Labels absent from the volume get no segment;
        segment numbers are consecutive from 1 in label order.

    Raises:
        DicomInputError: the label volume does not fit the series, holds a value without a
            name, or is empty.
        ConfigurationError: a name has no known anatomy code.
    """
    import highdicom as hd

    if not source or labels.shape != (len(source), int(source[0].Rows), int(source[0].Columns)):
        raise DicomInputError(
            f"a label volume of shape {labels.shape} does not fit a series of {len(source)} "
            f"images", fix="write the labels on the series' own grid (z, rows, columns)")
    present = [int(v) for v in np.unique(labels) if v != 0]
    unnamed = [v for v in present if v not in names]
    if unnamed:
        raise DicomInputError(f"label values {unnamed} have no name",
                              fix="name every label value (e.g. {1: 'liver'})")
    if not present:
        raise DicomInputError("the label volume is empty", fix="draw at least one structure")
    series_uid = str(source[0].SeriesInstanceUID)
    remapped = np.zeros(labels.shape, dtype=np.uint8)
    descriptions = []
    for number, value in enumerate(present, start=1):
        remapped[labels == value] = number
        name = names[value]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name,
            segmented_property_category=ANATOMICAL_STRUCTURE,
            segmented_property_type=code_for(name),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            tracking_uid=derived_uid("ground-truth", series_uid, "segment", name),
            tracking_id=f"{name} (ground truth)",
            display_color=hd.color.CIELabColor.from_rgb(*COLOURS[(value - 1) % len(COLOURS)]),
        ))
    return hd.seg.Segmentation(
        source_images=source,
        pixel_array=remapped,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=derived_uid("ground-truth", series_uid, "series"),
        series_number=GROUND_TRUTH_SERIES_NUMBER,
        sop_instance_uid=derived_uid("ground-truth", series_uid, "instance"),
        instance_number=1,
        manufacturer="radflow",
        manufacturer_model_name="radflow ground truth",
        software_versions=f"radflow {__version__}"[:64],
        device_serial_number="radflow",
        content_label="GROUNDTRUTH",
        content_description=description[:64],
        content_creator_name=creator,
        series_description=f"SEG {description}"[:64],
        omit_empty_frames=True,
    )

