"""The radiomics plugin's declaration (entry point ``radflow.plugins: radiomics``)."""

from __future__ import annotations

from typing import Any

from radflow.sdk import Plugin
from radflow_radiomics.block import RadiomicsParams
from radflow_radiomics.tasks import quantify_segmentation


def setup_site(ctx: Any) -> None:
    """Save the documented default parameters as the ``default`` block (once; kept if edited)."""
    try:
        RadiomicsParams.load("default")
    except ValueError:
        RadiomicsParams().save("default")


def _version() -> str:
    from radflow.plugins import distribution_version

    return distribution_version("radflow-radiomics")


plugin = Plugin(
    name="radiomics",
    version=_version(),
    description="pyradiomics features per segment of a SEG, stored as DICOM SR TID 1500",
    tasks=(quantify_segmentation,),
    blocks=(RadiomicsParams,),
    setup_site=setup_site,
)
