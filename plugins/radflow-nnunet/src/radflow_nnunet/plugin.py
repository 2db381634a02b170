"""The nnU-Net plugin's declaration (entry point ``radflow.plugins: nnunet``)."""

from __future__ import annotations

from typing import Any

from radflow.plugins import Plugin, Resources, TaskSpec, distribution_version
from radflow.types import SegmentationRef, SeriesRef
from radflow_nnunet.block import NnUNetModel
from radflow_nnunet.tasks import segment_series


def setup_site(ctx: Any) -> None:
    """Save an NnUNetModel block for every installed model (called by `radflow site up`)."""
    from radflow_nnunet.models import list_models

    for model in list_models():
        NnUNetModel(**model.block_fields()).save(model.name, overwrite=True)


plugin = Plugin(
    name="nnunet",
    version=distribution_version("radflow-nnunet"),
    description="nnU-Net v2 segmentation of a series, stored as DICOM SEG",
    tasks=(
        TaskSpec(
            name="segment",
            task=segment_series,
            inputs={"series": SeriesRef, "model": str},
            output=SegmentationRef,
            description="series -> nnU-Net -> DICOM SEG (coded anatomy, deterministic UIDs) -> Orthanc",
            resources=Resources(cpus=2, memory_gb=4, gpu="optional"),
        ),
    ),
    blocks=(NnUNetModel,),
    setup_site=setup_site,
)
