"""A label volume as a DICOM Segmentation (highdicom): coded anatomy per segment, the model as
algorithm identification, references to every source image, deterministic UIDs."""

from __future__ import annotations

from typing import Any

import numpy as np

from radflow.anatomy import ANATOMICAL_STRUCTURE
from radflow.imaging import derived_uid

SEG_SERIES_NUMBER = 9001
MANUFACTURER = "radflow"


def seg_uids(source_series_uid: str, model_name: str, model_version: str) -> tuple[str, str]:
    """(series UID, SOP instance UID) of the SEG made from a series by a model version."""
    base = ("seg", source_series_uid, model_name, model_version)
    return derived_uid(*base, "series"), derived_uid(*base, "instance")


def write_seg(source: list[Any], labels: np.ndarray, label_specs: dict[str, dict[str, str]],
              model_name: str, model_version: str) -> tuple[Any, dict[int, str]]:
    """Build the SEG dataset.

    Args:
        source: the source datasets in the volume's slice order (``labels[k]`` is slice k).
        labels: (z, y, x) label values.
        label_specs: label value (as text) -> ``{"name", "code", "scheme", "meaning"}``.
        model_name: algorithm name (the model).
        model_version: algorithm version.

    Returns:
        (the Segmentation dataset, segment number -> label name). Labels absent from the
        volume get no segment; segment numbers are consecutive from 1.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    from radflow import __version__

    if labels.shape[0] != len(source):
        raise ValueError(f"{labels.shape[0]} label slices for {len(source)} source images")
    present = [int(v) for v in np.unique(labels) if v != 0]
    unknown = [v for v in present if str(v) not in label_specs]
    if unknown:
        raise ValueError(f"label values {unknown} have no description in the model")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, version=model_version, family=codes.cid7162.ArtificialIntelligence)
    remapped = np.zeros(labels.shape, dtype=np.uint8)
    descriptions, segments = [], {}
    for number, value in enumerate(present, start=1):
        spec = label_specs[str(value)]
        remapped[labels == value] = number
        segments[number] = spec["name"]
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=spec["name"],
            segmented_property_category=ANATOMICAL_STRUCTURE,
            segmented_property_type=Code(spec["code"], spec["scheme"], spec["meaning"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=derived_uid("segment", source[0].SeriesInstanceUID, model_name,
                                     model_version, str(value)),
            tracking_id=f"{spec['name']} ({model_name})",
        ))
    if not descriptions:
        raise ValueError("the model found none of its structures in this series")
    series_uid, instance_uid = seg_uids(source[0].SeriesInstanceUID, model_name, model_version)
    seg = hd.seg.Segmentation(
        source_images=source,
        pixel_array=remapped,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=series_uid,
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=instance_uid,
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=f"radflow-nnunet {model_name}",
        software_versions=f"radflow {__version__} {model_name} {model_version}"[:64],
        device_serial_number="radflow",
        content_label="SEGMENTATION",
        content_description=f"{model_name} {model_version}"[:64],
        content_creator_name="radflow^nnunet",
        series_description=f"SEG {model_name} {model_version}"[:64],
        omit_empty_frames=True,
    )
    return seg, segments
