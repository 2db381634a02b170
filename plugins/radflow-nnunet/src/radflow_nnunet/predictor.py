"""Load a trained nnU-Net model once per process and segment volumes with it.

nnU-Net finds a trainer class by name by importing every module of its own training package
until one matches; on the way it imports a module that needs timm and torchvision, which do
not import on a CPU-only torch. radflow never asks nnU-Net to look anything up by name: the
network is built from the plans (``build_network_architecture`` is a static method of the base
trainer) and handed to ``nnUNetPredictor.manual_initialization``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radflow.errors import ConfigurationError

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()


@dataclass(frozen=True)
class LoadedModel:
    predictor: Any
    labels: dict[int, str]  # label value -> name (dataset.json)
    spacing: tuple[float, ...]  # target spacing of the configuration, (z, y, x) mm


def _device(name: str | None) -> Any:
    import torch

    if name:
        return torch.device(name)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(model_dir: str | Path, configuration: str = "3d_fullres",
               folds: tuple[str, ...] = ("all",), checkpoint: str = "checkpoint_final.pth",
               device: str | None = None, use_mirroring: bool = False,
               patch_size: tuple[int, ...] | None = None, tile_step_size: float = 0.5) -> LoadedModel:
    """The model in ``model_dir`` (``plans.json``, ``dataset.json``, ``fold_<f>/<checkpoint>``),
    loaded once per process and reused for every case.

    Args:
        use_mirroring: nnU-Net's test-time mirroring (8 passes per window instead of 1).
        patch_size: another inference patch (divisible by the network's strides). A network
            trained on small patches may do worse on much larger ones: measure before use.
        tile_step_size: sliding-window step as a fraction of the patch (0.5: nnU-Net's default;
            1.0: no overlap, about 3x fewer windows in 3D).

    Raises:
        ConfigurationError: a file of the model is missing.
    """
    model_dir = Path(model_dir)
    patch = tuple(patch_size) if patch_size else None
    key = (str(model_dir.resolve()), configuration, tuple(folds), checkpoint, device,
           use_mirroring, patch, tile_step_size)
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = _load(model_dir, configuration, tuple(folds), checkpoint,
                                _device(device), use_mirroring, patch, tile_step_size)
        return _CACHE[key]


def _load(model_dir: Path, configuration: str, folds: tuple[str, ...], checkpoint: str,
          device: Any, use_mirroring: bool, patch: tuple[int, ...] | None,
          tile_step_size: float) -> LoadedModel:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    needed = [model_dir / "plans.json", model_dir / "dataset.json",
              *(model_dir / f"fold_{f}" / checkpoint for f in folds)]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise ConfigurationError(
            f"the nnU-Net model in {model_dir} is incomplete: missing {', '.join(missing)}",
            fix="install the model again (`radflow model install ZIP`) or check its folds")
    plans = json.loads((model_dir / "plans.json").read_text())
    dataset_json = json.loads((model_dir / "dataset.json").read_text())
    plans_manager = PlansManager(plans)
    config = plans_manager.get_configuration(configuration)
    if patch:
        config.configuration["patch_size"] = list(patch)
    label_manager = plans_manager.get_label_manager(dataset_json)
    channels = determine_num_input_channels(plans_manager, config, dataset_json)
    network = nnUNetTrainer.build_network_architecture(
        plans_manager, config, channels, label_manager.num_segmentation_heads,
        enable_deep_supervision=False)
    weights, mirroring, trainer = [], None, "nnUNetTrainer"
    for fold in folds:
        saved = torch.load(model_dir / f"fold_{fold}" / checkpoint, map_location="cpu",
                           weights_only=False)
        weights.append(saved["network_weights"])
        mirroring = saved.get("inference_allowed_mirroring_axes", mirroring)
        trainer = saved.get("trainer_name", trainer)
    predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True,
                                use_mirroring=use_mirroring,
                                perform_everything_on_device=device.type == "cuda",
                                device=device, verbose=False, verbose_preprocessing=False,
                                allow_tqdm=False)
    predictor.manual_initialization(network, plans_manager, config, weights, dataset_json,
                                    trainer, mirroring)
    labels = {int(v): k for k, v in dataset_json["labels"].items() if int(v) != 0}
    return LoadedModel(predictor, labels, tuple(config.spacing))


def predict(model: LoadedModel, image: Any) -> Any:
    """Segment a SimpleITK image; returns a label image with the same geometry."""
    import numpy as np
    import SimpleITK as sitk

    array = sitk.GetArrayFromImage(image).astype(np.float32)[None]  # (c, z, y, x)
    properties = {"spacing": list(image.GetSpacing())[::-1]}
    labels = model.predictor.predict_single_npy_array(array, properties, None, None, False)
    result = sitk.GetImageFromArray(np.asarray(labels, dtype=np.uint8))
    result.CopyInformation(image)
    return result
