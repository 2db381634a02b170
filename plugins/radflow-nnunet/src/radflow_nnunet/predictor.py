"""Load a trained nnU-Net model once per process and segment volumes with it.

nnU-Net finds a trainer class by name by importing every module of its own training package
until one matches; on the way it imports a module that needs timm and torchvision, which do
not import on a CPU-only torch. radflow never asks nnU-Net to look anything up by name: the
network is built from the plans (``build_network_architecture`` is a static method of the base
trainer) and handed to ``nnUNetPredictor.manual_initialization``.

On the CPU, PyTorch sends a 3D convolution with one sample and few channels (nnU-Net predicts
one window at a time; its first and last stages have few channels) to its slow im2col path
instead of oneDNN: 13 of the demo model's 19 convolutions went there, half the network's time.
radflow has every 3D convolution call oneDNN (same weights, same result within 2e-5): 2.6x
faster per window on two cores (``bench/bench_pipeline.py``).

nnU-Net resamples the image to the model's spacing and the class probabilities back with
scipy, one channel at a time on one core: a quarter of a case's time here. radflow resamples
with SimpleITK instead (the same interpolation orders, pixel centres aligned as scikit-image
aligns them, every core), except where nnU-Net resamples an anisotropic axis separately.
``tests/test_models.py`` measures the Dice of the result on a phantom the model never saw.
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


def _onednn_conv3d() -> type:
    import torch

    class OneDnnConv3d(torch.nn.Conv3d):
        """A Conv3d that always runs oneDNN's convolution (see the module's docstring)."""

        def forward(self, x: Any) -> Any:
            return torch.ops.aten.mkldnn_convolution(
                x.contiguous(), self.weight, self.bias, list(self.padding), list(self.stride),
                list(self.dilation), self.groups)

    return OneDnnConv3d


def use_onednn(network: Any) -> int:
    """Have every zero-padded float 3D convolution of a CPU network call oneDNN; returns how
    many were switched (none when oneDNN is not available)."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return 0
    fast = _onednn_conv3d()
    switched = 0
    for module in network.modules():
        if type(module) is torch.nn.Conv3d and module.padding_mode == "zeros" and \
                module.weight.dtype == torch.float32:
            module.__class__ = fast
            switched += 1
    return switched


_INTERPOLATORS = {0: "sitkNearestNeighbor", 1: "sitkLinear", 3: "sitkBSpline"}


def resample_to_shape(data: Any, new_shape: Any, current_spacing: Any, new_spacing: Any,
                      is_seg: bool = False, order: int = 3, order_z: int = 0,
                      force_separate_z: bool | None = False,
                      separate_z_anisotropy_threshold: float = 3.0, fallback: Any = None) -> Any:
    """nnU-Net's ``resample_data_or_seg_to_shape`` (same signature, same result up to
    interpolation round-off) done by SimpleITK on every core. ``data`` is (c, z, y, x)."""
    import numpy as np
    import SimpleITK as sitk

    data = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
    current, new = np.asarray(current_spacing, float), np.asarray(new_spacing, float)
    anisotropic = max(current.max() / current.min(), new.max() / new.min()) > \
        separate_z_anisotropy_threshold
    if is_seg or order not in _INTERPOLATORS or force_separate_z or anisotropic:
        return fallback(data, new_shape, current_spacing, new_spacing, is_seg=is_seg,
                        order=order, order_z=order_z, force_separate_z=force_separate_z,
                        separate_z_anisotropy_threshold=separate_z_anisotropy_threshold)
    shape = np.asarray(data.shape[1:])
    target = np.asarray(new_shape, dtype=int)
    if (shape == target).all():
        return data.copy()
    in_spacing = np.ones(3)
    out_spacing = shape / target  # in input voxels: scikit-image's centre alignment
    out = np.empty((data.shape[0], *target), dtype=data.dtype)
    interpolator = getattr(sitk, _INTERPOLATORS[order])
    for c in range(data.shape[0]):
        image = sitk.GetImageFromArray(np.ascontiguousarray(data[c], dtype=np.float32))
        image.SetSpacing(in_spacing.tolist())
        resampled = sitk.Resample(
            image, [int(v) for v in target[::-1]], sitk.Transform(), interpolator,
            (0.5 * (out_spacing - in_spacing))[::-1].tolist(), out_spacing[::-1].tolist(),
            image.GetDirection(), 0.0, sitk.sitkFloat32)
        out[c] = sitk.GetArrayFromImage(resampled)
    return out


def fast_resampling(config: Any) -> None:
    """Have a configuration manager resample images and probabilities with SimpleITK."""
    from functools import partial

    from nnunetv2.preprocessing.resampling.default_resampling import (
        resample_data_or_seg_to_shape,
    )

    base = type(config)

    def wrap(name: str) -> Any:
        fallback = getattr(base, name).fget

        def get(self: Any) -> Any:
            theirs = fallback(self)
            if getattr(theirs, "func", None) is not resample_data_or_seg_to_shape:
                return theirs  # a resampling of the model's own: leave it alone
            return partial(resample_to_shape, **theirs.keywords, fallback=theirs.func)

        return property(get)

    config.__class__ = type("FastResampling", (base,), {
        "resampling_fn_data": wrap("resampling_fn_data"),
        "resampling_fn_probabilities": wrap("resampling_fn_probabilities")})


def _load(model_dir: Path, configuration: str, folds: tuple[str, ...], checkpoint: str,
          device: Any, use_mirroring: bool, patch: tuple[int, ...] | None,
          tile_step_size: float) -> LoadedModel:
    import torch

    needed = [model_dir / "plans.json", model_dir / "dataset.json",
              *(model_dir / f"fold_{f}" / checkpoint for f in folds)]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        raise ConfigurationError(
            f"the nnU-Net model in {model_dir} is incomplete: missing {', '.join(missing)}",
            fix="install the model again (`radflow model install ZIP`) or check its folds")
    plans = json.loads((model_dir / "plans.json").read_text())
    dataset_json = json.loads((model_dir / "dataset.json").read_text())
    weights, mirroring, trainer = [], None, "nnUNetTrainer"
    for fold in folds:
        saved = torch.load(model_dir / f"fold_{fold}" / checkpoint, map_location="cpu",
                           weights_only=False)
        weights.append(saved["network_weights"])
        mirroring = saved.get("inference_allowed_mirroring_axes", mirroring)
        trainer = saved.get("trainer_name", trainer)
    return model_from_weights(plans, dataset_json, weights, configuration, device, use_mirroring,
                              patch, tile_step_size, mirroring, trainer)


def model_from_weights(plans: dict, dataset_json: dict, weights: list[dict], configuration: str,
                       device: Any, use_mirroring: bool = False,
                       patch: tuple[int, ...] | None = None, tile_step_size: float = 0.5,
                       mirroring: tuple[int, ...] | None = None,
                       trainer: str = "nnUNetTrainer") -> LoadedModel:
    """A model from plans, dataset.json and state dicts in memory (one per fold), not cached:
    what ``load_model`` builds from a model folder (federated rounds evaluate weights that were
    never written as a model)."""
    import copy

    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    device = _device(device) if device is None or isinstance(device, str) else device
    plans_manager = PlansManager(copy.deepcopy(plans))
    config = plans_manager.get_configuration(configuration)
    if patch:
        config.configuration["patch_size"] = list(patch)
    label_manager = plans_manager.get_label_manager(dataset_json)
    channels = determine_num_input_channels(plans_manager, config, dataset_json)
    network = nnUNetTrainer.build_network_architecture(
        plans_manager, config, channels, label_manager.num_segmentation_heads,
        enable_deep_supervision=False)
    if device.type == "cpu":
        use_onednn(network)
        fast_resampling(config)
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
