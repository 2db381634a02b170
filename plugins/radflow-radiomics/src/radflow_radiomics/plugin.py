"""The radiomics plugin's declaration (entry point ``radflow.plugins: radiomics``)."""

from __future__ import annotations

from typing import Any

from radflow.plugins import Plugin, Resources, TaskSpec, distribution_version
from radflow.types import FeatureTable, SegmentationRef
from radflow_radiomics.block import RadiomicsParams
from radflow_radiomics.tasks import quantify_segmentation


def setup_site(ctx: Any) -> None:
    """Save the documented default parameters as the ``default`` block (once; kept if edited)."""
    try:
        RadiomicsParams.load("default")
    except ValueError:
        RadiomicsParams().save("default")


plugin = Plugin(
    name="radiomics",
    version=distribution_version("radflow-radiomics"),
    description="pyradiomics features per segment of a SEG, stored as DICOM SR TID 1500",
    tasks=(
        TaskSpec(
            name="quantify",
            task=quantify_segmentation,
            inputs={"seg": SegmentationRef, "params": str},
            output=FeatureTable,
            description="SEG -> pyradiomics per segment -> DICOM SR (TID 1500) -> Orthanc + catalog",
            resources=Resources(cpus=1, memory_gb=2),
        ),
    ),
    blocks=(RadiomicsParams,),
    setup_site=setup_site,
)
