"""The nnU-Net plugin's declaration (entry point ``radflow.plugins: nnunet``)."""

from __future__ import annotations

from typing import Any

from radflow.sdk import Plugin
from radflow_nnunet.block import NnUNetModel
from radflow_nnunet.tasks import segment_series


def setup_site(ctx: Any) -> None:
    """Save an NnUNetModel block for every installed model (called by `radflow site up`)."""
    from radflow_nnunet.models import list_models

    for model in list_models():
        NnUNetModel(**model.block_fields()).save(model.name, overwrite=True)


def _version() -> str:
    from radflow.plugins import distribution_version

    return distribution_version("radflow-nnunet")


plugin = Plugin(
    name="nnunet",
    version=_version(),
    description="nnU-Net v2 segmentation of a series, stored as DICOM SEG",
    tasks=(segment_series,),
    blocks=(NnUNetModel,),
    setup_site=setup_site,
)
