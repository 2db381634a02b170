"""The radiomics plugin's task: a SEG -> pyradiomics per segment -> DICOM SR -> Orthanc + catalog."""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

from prefect import task
from radflow.tasks.retry import retry_unless_bad_input

from radflow.catalog.db import session_scope
from radflow.catalog.results import feature_table, find_result, record_result, replace_features
from radflow.errors import DicomInputError, RadflowError
from radflow.imaging import Volume, load_volume
from radflow.runtime import site_runtime
from radflow.types import FeatureTable, ReportRef, SegmentationRef
from radflow_radiomics.block import RadiomicsParams


def resolve_params(name: str) -> RadiomicsParams:
    """The params block from the site's Prefect server; ``default`` also works without one."""
    try:
        return RadiomicsParams.load(name)
    except (ValueError, RuntimeError):
        if name == "default":
            return RadiomicsParams()
        raise


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


def quantify(volume: Volume, seg: Any, params: RadiomicsParams) -> tuple[FeatureTable, Any]:
    """Features of every segment and the SR that carries them (no storing)."""
    import radiomics

    from radflow_radiomics.features import extract
    from radflow_radiomics.sr import write_sr

    masks = segment_masks(seg, volume)
    table = extract(volume.image, masks, params.to_pyradiomics(), volume.ref.series_uid)
    sr = write_sr(volume.datasets, seg, table, params.version_hash(), radiomics.__version__)
    return table, sr


@task(name="quantify", retries=2, retry_delay_seconds=[5, 20],
      retry_condition_fn=retry_unless_bad_input, task_run_name="quantify-{seg.source.orthanc_id}")
def quantify_segmentation(seg: SegmentationRef, params: str = "default", site: str | None = None,
                          force: bool = False) -> tuple[ReportRef, FeatureTable]:
    """pyradiomics features per segment of a SEG, stored as DICOM SR (TID 1500) in Orthanc and
    as rows of the catalog's feature table. Deterministic UIDs: a re-run stores nothing new."""
    import pydicom

    rt = site_runtime(site)
    spec = resolve_params(params)
    version = spec.version_hash()
    with session_scope(rt.catalog_url) as session:
        done = find_result(session, "SR", seg.source.series_uid, "pyradiomics", version)
        if done is not None and not force and json.loads(done.detail).get("seg") == seg.sop_instance_uid:
            try:
                rt.orthanc.resource("instances", done.orthanc_id)
                return _ref(done, seg), feature_table(session, [seg.source.series_uid])
            except RadflowError:
                pass  # deleted from Orthanc since: compute again
    volume = load_volume(rt.orthanc, seg.source)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seg_ds = pydicom.dcmread(io.BytesIO(rt.orthanc.instance_file(seg.orthanc_id)))
    table, sr = quantify(volume, seg_ds, spec)
    stored = rt.orthanc.store_dataset(sr)
    with session_scope(rt.catalog_url) as session:
        row = record_result(session, kind="SR", source_series_uid=seg.source.series_uid,
                            algorithm="pyradiomics", version=version, orthanc_id=stored.instance_id,
                            sop_instance_uid=sr.SOPInstanceUID, series_uid=sr.SeriesInstanceUID,
                            detail={"seg": seg.sop_instance_uid, "features": len(table.rows)})
        replace_features(session, row, table)
        return _ref(row, seg), table


def _ref(row: Any, seg: SegmentationRef) -> ReportRef:
    return ReportRef(orthanc_id=row.orthanc_id, sop_instance_uid=row.sop_instance_uid,
                     series_uid=row.series_uid, segmentation=seg)
