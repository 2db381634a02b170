"""A label volume as a DICOM Segmentation (highdicom): coded anatomy per segment, the model as
algorithm identification, references to every source image, the display colour of each segment
(the colour of radflow's overlays), UIDs given by the result key."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from radflow.sdk import ANATOMICAL_STRUCTURE, ConfigurationError, EmptyResult

SEG_SERIES_NUMBER = 9001
MANUFACTURER = "radflow"


def write_seg(source: list[Any], labels: np.ndarray, label_specs: dict[str, dict[str, str]],
              model_name: str, model_version: str, *, series_uid: str, instance_uid: str,
              uid: Callable[..., str]) -> Any:
    """Build the SEG dataset.

    Args:
        source: the source datasets in the volume's slice order (``labels[k]`` is slice k).
        labels: (z, y, x) label values.
        label_specs: label value (as text) -> ``{"name", "code", "scheme", "meaning"}``.
        model_name: algorithm name (the model).
        model_version: algorithm version.
        series_uid: the SEG's SeriesInstanceUID (from the result key).
        instance_uid: its SOPInstanceUID (from the result key).
        uid: makes more deterministic UIDs (segment tracking UIDs).

    Returns:
        The Segmentation dataset. Labels absent from the volume get no segment; segment numbers
        are consecutive from 1.

    Raises:
        EmptyResult: the model found none of its structures in the series.
        ConfigurationError: a label value has no description in the model.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    from radflow import __version__
    from radflow_nnunet.thumbnail import segment_colour

    if labels.shape[0] != len(source):
        raise ConfigurationError(f"{labels.shape[0]} label slices for {len(source)} source images",
                                 fix="the model must return a label volume on the image's grid")
    present = [int(v) for v in np.unique(labels) if v != 0]
    unknown = [v for v in present if str(v) not in label_specs]
    if unknown:
        raise ConfigurationError(f"label values {unknown} have no description in the model",
                                 fix="describe every label in the model's radflow-model.json")
    if not present:
        raise EmptyResult(
            f"the model {model_name} found none of its structures "
            f"({', '.join(s['name'] for s in label_specs.values())}) in series "
            f"{source[0].SeriesInstanceUID}",
            fix="check that the series shows the anatomy the model segments")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, version=model_version, family=codes.cid7162.ArtificialIntelligence)
    remapped = np.zeros(labels.shape, dtype=np.uint8)
    descriptions = []
    for number, value in enumerate(present, start=1):
        spec = label_specs[str(value)]
        remapped[labels == value] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=spec["name"],
            segmented_property_category=ANATOMICAL_STRUCTURE,
            segmented_property_type=Code(spec["code"], spec["scheme"], spec["meaning"]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=uid("segment", str(value)),
            tracking_id=f"{spec['name']} ({model_name})",
            display_color=hd.color.CIELabColor.from_rgb(*segment_colour(value)),
        ))
    return hd.seg.Segmentation(
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
