"""The nnU-Net plugin's producer: a series from Orthanc -> nnU-Net -> a DICOM SEG. Core caches,
stores, records and versions it (``radflow.sdk.producer``)."""

from __future__ import annotations

from typing import Any

from radflow.sdk import Algorithm, ProducerContext, Resources, SeriesRef, producer
from radflow_nnunet.block import NnUNetModel
from radflow_nnunet.models import DEFAULT_MODEL, get_model


def resolve_model(name: str) -> NnUNetModel:
    """The model's block from the site's Prefect server, else the locally installed model.

    Raises:
        ConfigurationError: no such model (the message lists the installed ones).
    """
    try:
        return NnUNetModel.load(name)
    except (ValueError, RuntimeError):
        return NnUNetModel(**get_model(name).block_fields())


def identify(model: str = DEFAULT_MODEL) -> Algorithm:
    """The model (name and version) and the inference settings that change its output."""
    spec = resolve_model(model)
    params = {"configuration": spec.configuration, "folds": list(spec.folds),
              "checkpoint": spec.checkpoint, "use_mirroring": spec.use_mirroring,
              "patch_size": spec.patch_size, "tile_step_size": spec.tile_step_size}
    return Algorithm(spec.name, spec.version, params, resolved=spec)


@producer("SEG", name="segment", identify=identify,
          resources=Resources(cpus=2, memory_gb=4, gpu="optional"))
def segment_series(ctx: ProducerContext, series: SeriesRef, model: str = DEFAULT_MODEL) -> Any:
    """series -> nnU-Net -> DICOM SEG (coded anatomy, deterministic UIDs)"""
    import SimpleITK as sitk

    from radflow.sdk import Derived
    from radflow_nnunet.predictor import load_model, predict
    from radflow_nnunet.seg import write_seg
    from radflow_nnunet.thumbnail import overlay_png

    spec: NnUNetModel = ctx.algorithm.resolved
    volume = ctx.volume(series, expected_modality=spec.modality)
    with ctx.timer("load_model"):
        loaded = load_model(spec.model_dir, spec.configuration, tuple(spec.folds), spec.checkpoint,
                            use_mirroring=spec.use_mirroring, patch_size=spec.patch_size,
                            tile_step_size=spec.tile_step_size)
    with ctx.timer("predict"):
        labels = sitk.GetArrayFromImage(predict(loaded, volume.image))
    with ctx.timer("encode"):
        seg = write_seg(volume.datasets, labels, spec.labels, spec.name, spec.version,
                        series_uid=ctx.series_uid, instance_uid=ctx.instance_uid, uid=ctx.uid)
    thumbnail = overlay_png(sitk.GetArrayFromImage(volume.image), labels)
    return Derived(dataset=seg, detail={"thumbnail": thumbnail})
