"""The radiomics plugin's producer: a SEG -> pyradiomics per segment -> a DICOM SR with its
feature table. Core caches, stores, records and versions both (``radflow.sdk.producer``)."""

from __future__ import annotations

from typing import Any

from radflow.sdk import (
    Algorithm,
    DicomInputError,
    ProducerContext,
    Resources,
    SegmentationRef,
    Volume,
    producer,
)
from radflow_radiomics.block import RadiomicsParams


def resolve_params(name: str) -> RadiomicsParams:
    """The params block from the site's Prefect server; ``default`` also works without one.

    Raises:
        ConfigurationError: no such parameters block.
    """
    from radflow.sdk import ConfigurationError

    try:
        return RadiomicsParams.load(name)
    except (ValueError, RuntimeError) as exc:
        if name == "default":
            return RadiomicsParams()
        raise ConfigurationError(f"no radiomics parameters named {name!r} on this site",
                                 fix="save them as a RadiomicsParams block (see "
                                     "RadiomicsParams.from_yaml), or use 'default'") from exc


def identify(params: str = "default") -> Algorithm:
    """pyradiomics (its version) and the hash of the extraction parameters."""
    from importlib.metadata import version

    spec = resolve_params(params)
    return Algorithm("pyradiomics", version("pyradiomics"), spec.to_pyradiomics(), resolved=spec)


def segment_masks(seg: Any, volume: Volume) -> dict[int, tuple[str, Any]]:
    """Segment number -> (label, binary mask on the volume's grid), from a SEG of this series.

    Raises:
        DicomInputError: the SEG does not reference the series' images.
    """
    import highdicom as hd
    import numpy as np
    import SimpleITK as sitk

    segmentation = hd.seg.Segmentation.from_dataset(seg)
    uids = [ds.SOPInstanceUID for ds in volume.datasets]
    masks = {}
    for number in segmentation.get_segment_numbers():
        try:
            pixels = segmentation.get_pixels_by_source_instance(
                source_sop_instance_uids=uids, segment_numbers=[number],
                assert_missing_frames_are_empty=True)
        except (KeyError, ValueError) as exc:
            raise DicomInputError(f"SEG {seg.SOPInstanceUID} does not reference the images of "
                                  f"series {volume.ref.series_uid}: {exc}",
                                  fix="segment the series again") from exc
        mask = sitk.GetImageFromArray(np.ascontiguousarray(pixels[..., 0] > 0).astype(np.uint8))
        mask.CopyInformation(volume.image)
        masks[number] = (str(segmentation.get_segment_description(number).segment_label), mask)
    return masks


@producer("SR", name="quantify", identify=identify, resources=Resources(cpus=1, memory_gb=2))
def quantify_segmentation(ctx: ProducerContext, seg: SegmentationRef,
                          params: str = "default") -> Any:
    """SEG -> pyradiomics per segment -> DICOM SR (TID 1500, IBSI codes) + feature table"""
    import radiomics

    from radflow.sdk import Derived
    from radflow_radiomics.features import extract
    from radflow_radiomics.sr import write_sr

    spec: RadiomicsParams = ctx.algorithm.resolved
    volume = ctx.volume(seg.source)
    with ctx.timer("read_seg"):
        seg_ds = ctx.dicom(seg)
    with ctx.timer("features"):
        masks = segment_masks(seg_ds, volume)
        table = extract(volume.image, masks, spec.to_pyradiomics(), seg.source.series_uid)
    if not table.rows:
        raise DicomInputError(f"no segment of SEG {seg_ds.SOPInstanceUID} is large enough to "
                              f"quantify ({', '.join(label for label, _ in masks.values())})",
                              fix="correct the segmentation in the worklist's editor, or "
                                  "reject the case")
    with ctx.timer("encode"):
        sr = write_sr(volume.datasets, seg_ds, table, spec.version_hash(), radiomics.__version__,
                      series_uid=ctx.series_uid, instance_uid=ctx.instance_uid, uid=ctx.uid)
    return Derived(dataset=sr, features=table)
