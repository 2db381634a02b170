"""Bone by CT threshold, stored as a DICOM SEG: a radflow producer. Core caches, stores,
records and versions the SEG; this module only makes it."""

from __future__ import annotations

from typing import Any

from radflow.sdk import EmptyResult, Plugin, ProducerContext, Resources, SeriesRef, producer


@producer("SEG", name="segment", algorithm="bone-threshold", version="1.0",
          resources=Resources(cpus=1, memory_gb=1))
def bone(ctx: ProducerContext, series: SeriesRef, level: float = 250.0) -> Any:
    """CT voxels at or above a HU level -> DICOM SEG (bone)"""
    import highdicom as hd
    import SimpleITK as sitk
    from pydicom.sr.codedict import codes
    from pydicom.sr.coding import Code

    volume = ctx.volume(series, expected_modality="CT")
    mask = (sitk.GetArrayFromImage(volume.image) >= level).astype("uint8")
    if not mask.any():
        raise EmptyResult(f"no voxel of series {series.series_uid} reaches {level} HU",
                          fix="lower the level, or select CT series that show bone")
    segment = hd.seg.SegmentDescription(
        segment_number=1, segment_label="bone",
        segmented_property_category=Code("85756007", "SCT", "Tissue"),
        segmented_property_type=Code("272673000", "SCT", "Bone"),
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="bone-threshold", version="1.0",
            family=codes.cid7162.HistogramAnalysis),
        tracking_uid=ctx.uid("bone"), tracking_id="bone")
    return hd.seg.Segmentation(
        source_images=volume.datasets, pixel_array=mask,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment], series_instance_uid=ctx.series_uid, series_number=9101,
        sop_instance_uid=ctx.instance_uid, instance_number=1, manufacturer="radflow-bone",
        manufacturer_model_name="bone-threshold", software_versions="1.0",
        device_serial_number="radflow", series_description=f"SEG bone >= {level:g} HU",
        omit_empty_frames=True)


plugin = Plugin(name="bone", version="0.1.0", tasks=(bone,),
                description="Bone by CT threshold, as DICOM SEG (an example producer)")
