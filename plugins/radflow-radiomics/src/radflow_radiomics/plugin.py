"""The radiomics plugin's declaration (entry point ``radflow.plugins: radiomics``). Its task,
block and site hook are named, not imported: discovering plugins stays light (no Prefect
import)."""

from __future__ import annotations

from radflow.plugins import Plugin, distribution_version

plugin = Plugin(
    name="radiomics",
    version=distribution_version("radflow-radiomics"),
    description="pyradiomics features per segment of a SEG, stored as DICOM SR TID 1500",
    tasks=("radflow_radiomics.tasks:quantify_segmentation",),
    blocks=("radflow_radiomics.block:RadiomicsParams",),
    setup_site="radflow_radiomics.block:setup_site",
)
