"""The nnU-Net plugin's task: a series from Orthanc -> nnU-Net -> DICOM SEG -> Orthanc -> catalog."""

from __future__ import annotations

import logging
import time
from typing import Any

from prefect import task
from radflow.tasks.retry import retry_unless_bad_input

from radflow.catalog.db import session_scope
from radflow.catalog.results import find_result, record_result
from radflow.errors import RadflowError
from radflow.imaging import load_volume
from radflow.runtime import site_runtime
from radflow.types import SegmentationRef, SeriesRef
from radflow_nnunet.block import NnUNetModel
from radflow_nnunet.models import DEFAULT_MODEL, get_model

logger = logging.getLogger(__name__)


def resolve_model(name: str) -> NnUNetModel:
    """The model's block from the site's Prefect server, else the locally installed model."""
    try:
        return NnUNetModel.load(name)
    except (ValueError, RuntimeError):
        return NnUNetModel(**get_model(name).block_fields())


def segment(series: SeriesRef, model: NnUNetModel, orthanc: Any) -> tuple[Any, dict[str, float]]:
    """Segment one series and build its SEG (no storing). Returns (SEG dataset, timings)."""
    import SimpleITK as sitk

    from radflow_nnunet.predictor import load_model, predict
    from radflow_nnunet.seg import write_seg
    from radflow_nnunet.thumbnail import overlay_png

    times = {}
    began = time.perf_counter()
    volume = load_volume(orthanc, series, expected_modality=model.modality)
    times["read_s"] = time.perf_counter() - began
    loaded = load_model(model.model_dir, model.configuration, tuple(model.folds), model.checkpoint,
                        use_mirroring=model.use_mirroring, patch_size=model.patch_size,
                        tile_step_size=model.tile_step_size)
    began = time.perf_counter()
    labels = sitk.GetArrayFromImage(predict(loaded, volume.image))
    times["predict_s"] = time.perf_counter() - began
    began = time.perf_counter()
    seg, segments = write_seg(volume.datasets, labels, model.labels, model.name, model.version)
    times["seg_s"] = time.perf_counter() - began
    thumb = overlay_png(sitk.GetArrayFromImage(volume.image), labels)
    return seg, {**times, "segments": segments, "thumbnail": thumb}


@task(name="segment", retries=2, retry_delay_seconds=[5, 20],
      retry_condition_fn=retry_unless_bad_input, task_run_name="segment-{series.orthanc_id}")
def segment_series(series: SeriesRef, model: str = DEFAULT_MODEL, site: str | None = None,
                   force: bool = False) -> SegmentationRef:
    """Segment a series with an nnU-Net model and store the result as DICOM SEG in Orthanc.

    The SEG's UIDs derive from the source series and the model version: running it again stores
    the same object (Orthanc answers AlreadyStored) and updates the same catalog row. With
    ``force=False`` a series already segmented by this model version is not computed again.

    Raises:
        DicomInputError: the series is not a volume the model can read (wrong modality, missing
            slices...): not retried.
    """
    rt = site_runtime(site)
    spec = resolve_model(model)
    with session_scope(rt.catalog_url) as session:
        done = find_result(session, "SEG", series.series_uid, spec.name, spec.version)
    if done is not None and not force:
        try:
            rt.orthanc.resource("instances", done.orthanc_id)
            return _ref(done, series, spec)
        except RadflowError:
            pass  # deleted from Orthanc since: compute it again
    seg, info = segment(series, spec, rt.orthanc)
    stored = rt.orthanc.store_dataset(seg)
    segments, thumbnail = info.pop("segments"), info.pop("thumbnail")
    with session_scope(rt.catalog_url) as session:
        row = record_result(session, kind="SEG", source_series_uid=series.series_uid,
                            algorithm=spec.name, version=spec.version, orthanc_id=stored.instance_id,
                            sop_instance_uid=seg.SOPInstanceUID, series_uid=seg.SeriesInstanceUID,
                            detail={"segments": segments, "thumbnail": thumbnail,
                                    **{k: round(v, 3) for k, v in info.items()}})
        return _ref(row, series, spec)


def _ref(row: Any, series: SeriesRef, spec: NnUNetModel) -> SegmentationRef:
    import json

    segments = {int(k): v for k, v in json.loads(row.detail).get("segments", {}).items()}
    return SegmentationRef(orthanc_id=row.orthanc_id, sop_instance_uid=row.sop_instance_uid,
                           series_uid=row.series_uid, source=series, segments=segments,
                           algorithm=spec.name, algorithm_version=spec.version)
