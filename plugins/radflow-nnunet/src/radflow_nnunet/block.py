"""The ``NnUNetModel`` block: which trained nnU-Net model to run, and how."""

from __future__ import annotations

from typing import Any

from prefect.blocks.core import Block
from pydantic import Field


class NnUNetModel(Block):
    """A trained nnU-Net v2 model that a site can run, with the meaning of its labels.

    `radflow site up` saves one block per installed model (the built-in demo model included),
    named after the model.

    Example:
        ```python
        from radflow_nnunet.block import NnUNetModel

        model = NnUNetModel.load("radflow-abdomen-demo")
        print(model.model_dir, model.labels)
        ```
    """

    _block_type_name = "radflow nnU-Net Model"
    _block_type_slug = "radflow-nnunet-model"
    _description = "A trained nnU-Net v2 model: where it lives, how to run it, what its labels mean."

    name: str = Field(description="Model name.", examples=["radflow-abdomen-demo"])
    version: str = Field(description="Model version (part of the SEG's algorithm identification "
                         "and of the flow's cache key).", examples=["1.0.0"])
    model_dir: str = Field(description="Trained model folder: plans.json, dataset.json, fold_*/.",
                           examples=["/home/me/.radflow/models/radflow-abdomen-demo"])
    dataset: str = Field(default="", description="nnU-Net dataset the model was trained on.",
                         examples=["Dataset501_RadflowAbdomen"])
    configuration: str = Field(default="3d_fullres", description="nnU-Net configuration.",
                               examples=["3d_fullres"])
    folds: list[str] = Field(default_factory=lambda: ["all"], description="Folds to ensemble.",
                             examples=[["all"], ["0", "1", "2", "3", "4"]])
    checkpoint: str = Field(default="checkpoint_final.pth", description="Checkpoint file name.",
                            examples=["checkpoint_final.pth"])
    modality: str = Field(default="CT", description="Modality of the input series.", examples=["CT"])
    labels: dict[str, dict[str, str]] = Field(
        description="Label value -> name and SNOMED CT code of what it segments.",
        examples=[{"1": {"name": "liver", "code": "10200004", "scheme": "SCT", "meaning": "Liver"}}])
    use_mirroring: bool = Field(default=False, description="Test-time mirroring: ~8x slower on "
                                "CPUs for a small gain.", examples=[False])
    patch_size: list[int] | None = Field(default=None, description="Inference patch size (z, y, "
                                         "x); None: the training patch.", examples=[[40, 80, 80]])
    tile_step_size: float = Field(default=0.5, description="Sliding-window step as a fraction of "
                                  "the patch (nnU-Net's default 0.5).", examples=[0.75])


def setup_site(ctx: Any) -> None:
    """Save an NnUNetModel block for every installed model (the plugin's ``setup_site`` hook,
    called by `radflow site up`)."""
    from radflow_nnunet.models import list_models

    for model in list_models():
        NnUNetModel(**model.block_fields()).save(model.name, overwrite=True)
