"""The nnU-Net plugin's declaration (entry point ``radflow.plugins: nnunet``). Its task, block
and site hook are named, not imported: discovering plugins stays light (no Prefect import)."""

from __future__ import annotations

from radflow.plugins import Plugin, distribution_version

plugin = Plugin(
    name="nnunet",
    version=distribution_version("radflow-nnunet"),
    description="nnU-Net v2 segmentation of a series, stored as DICOM SEG",
    tasks=("radflow_nnunet.tasks:segment_series",),
    blocks=("radflow_nnunet.block:NnUNetModel",),
    setup_site="radflow_nnunet.block:setup_site",
)
