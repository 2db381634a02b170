"""The network of a shared nnU-Net plan as one flat vector of weights, and back.

What the vector holds (``layout``): every floating-point entry of the network's ``state_dict``,
each once, in the network's own order (parameters, then floating-point buffers). The plans
nnU-Net makes use InstanceNorm with ``affine=True`` and no running statistics, so the state_dict
of such a network holds only trained parameters (convolution weights and biases, norm scales
and shifts); ``decoder.encoder.*`` repeats the encoder's tensors under a second name and is
carried once. A plan with BatchNorm would add ``running_mean``/``running_var`` (floating point:
carried and averaged like weights, as FedAvg does) and ``num_batches_tracked`` (an integer
count: not carried; it stays at its initial value). The same plan always gives the same layout
whether deep supervision is on (training) or off (inference): the segmentation heads of every
decoder stage exist either way.

Every site and the hub build the network from the same plan with the same seed, so round 0
starts from identical weights everywhere (``initial_weights``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np

from radflow.errors import ConfigurationError

CONFIGURATION = "3d_fullres"
TRAINER_NAME = "RadflowTrainer"


def build_network(plans: dict, dataset_json: dict, configuration: str = CONFIGURATION,
                  deep_supervision: bool = False) -> Any:
    """The plan's network (nnU-Net's own builder, its own He initialisation), on the CPU."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(copy.deepcopy(plans))
    if configuration not in plans_manager.available_configurations:
        raise ConfigurationError(
            f"the plan has no configuration {configuration!r} (it has "
            f"{', '.join(plans_manager.available_configurations)})",
            fix="plan the study with that configuration or pass one the plan has")
    config = plans_manager.get_configuration(configuration)
    label_manager = plans_manager.get_label_manager(dataset_json)
    channels = determine_num_input_channels(plans_manager, config, dataset_json)
    return nnUNetTrainer.build_network_architecture(
        plans_manager, config, channels, label_manager.num_segmentation_heads,
        enable_deep_supervision=deep_supervision)


def _entries(network: Any) -> list[tuple[str, Any]]:
    """The carried tensors of a network: parameters, then floating-point buffers, each once."""
    found = [(name, t) for name, t in network.named_parameters()]
    found += [(name, t) for name, t in network.named_buffers() if t.is_floating_point()]
    return found


def network_layout(network: Any) -> list[tuple[str, tuple[int, ...]]]:
    """``layout`` of a network already built."""
    return [(name, tuple(t.shape)) for name, t in _entries(network)]


def layout(plans: dict, dataset_json: dict,
           configuration: str = CONFIGURATION) -> list[tuple[str, tuple[int, ...]]]:
    """The ordered ``(name, shape)`` list that a flat weight vector of this plan's network
    follows (see the module's docstring for what is in it)."""
    return network_layout(build_network(plans, dataset_json, configuration))


def vector_size(entries: list[tuple[str, tuple[int, ...]]]) -> int:
    """How many numbers a vector of this layout holds."""
    return int(sum(int(np.prod(shape)) for _, shape in entries))


def initial_weights(plans: dict, dataset_json: dict, seed: int,
                    configuration: str = CONFIGURATION) -> dict[str, np.ndarray]:
    """Round 0's weights: the plan's network initialised by nnU-Net with torch seeded by
    ``seed`` (the caller's global random state is left as it was). Same plan and seed, same
    weights, at every site and at the hub. Ordered as ``layout``; float32."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        network = build_network(plans, dataset_json, configuration)
    return {name: t.detach().cpu().numpy().astype(np.float32).copy()
            for name, t in _entries(network)}


def to_vector(weights: dict[str, np.ndarray], dtype: Any = np.float32) -> np.ndarray:
    """A weights dict (as ``initial_weights`` returns, in layout order) as one flat vector."""
    return np.concatenate([np.asarray(w, dtype=np.float32).ravel() for w in weights.values()]
                          ).astype(dtype)


def check_vector(vector: Any, entries: list[tuple[str, tuple[int, ...]]]) -> np.ndarray:
    """The vector as float32, after checking it fits the layout and is finite.

    Raises:
        ConfigurationError: wrong length, not one-dimensional, or a value that is not finite.
    """
    flat = np.asarray(vector)
    expected = vector_size(entries)
    if flat.ndim != 1 or flat.size != expected:
        raise ConfigurationError(
            f"the weight vector has shape {flat.shape}; this plan's network has {expected} "
            "weights", fix="use weights of the same study plan (layout(plans, dataset_json))")
    flat = flat.astype(np.float32)
    if not np.isfinite(flat).all():
        raise ConfigurationError("the weight vector holds values that are not finite (NaN or "
                                 "infinite)", fix="restart the round from the last good "
                                 "global weights; lower the learning rate if it diverged")
    return flat


def load_vector(network: Any, vector: Any) -> None:
    """Copy a flat vector (layout order) into a network's parameters and buffers, in place."""
    import torch

    entries = _entries(network)
    flat = check_vector(vector, [(n, tuple(t.shape)) for n, t in entries])
    offset = 0
    with torch.no_grad():
        for _, tensor in entries:
            size = tensor.numel()
            tensor.copy_(torch.from_numpy(flat[offset:offset + size]).view_as(tensor))
            offset += size


def network_vector(network: Any) -> np.ndarray:
    """A network's carried tensors as one flat float32 vector (layout order)."""
    return np.concatenate([t.detach().cpu().float().numpy().ravel()
                           for _, t in _entries(network)])


def state_dict_from_vector(plans: dict, dataset_json: dict, vector: Any,
                           configuration: str = CONFIGURATION) -> dict[str, Any]:
    """The network's full ``state_dict`` (every key nnU-Net's loader expects) for a vector."""
    network = build_network(plans, dataset_json, configuration)
    load_vector(network, vector)
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def export_model(plans: dict, dataset_json: dict, vector: Any, out_folder: str | Path,
                 card: dict[str, Any], configuration: str = CONFIGURATION) -> Path:
    """Write an nnU-Net model folder as radflow installs models: ``plans.json``,
    ``dataset.json``, ``fold_all/checkpoint_final.pth`` (weights only: no optimizer state) and
    the model card ``radflow-model.json`` (``card`` over defaults taken from the plan).
    ``radflow_nnunet.predictor.load_model`` loads it; ``models.export_zip`` zips it.

    Raises:
        ConfigurationError: the card has no name, or the vector does not fit the plan.
    """
    import torch

    if not card.get("name"):
        raise ConfigurationError("the model card has no name",
                                 fix="pass card={'name': ..., 'version': ...}")
    out = Path(out_folder)
    state = state_dict_from_vector(plans, dataset_json, vector, configuration)
    patch = plans["configurations"][configuration]["patch_size"]
    (out / "fold_all").mkdir(parents=True, exist_ok=True)
    (out / "plans.json").write_text(json.dumps(plans, indent=2))
    (out / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    torch.save({"network_weights": state, "trainer_name": TRAINER_NAME,
                "inference_allowed_mirroring_axes": tuple(range(len(patch))),
                "current_epoch": 0}, out / "fold_all" / "checkpoint_final.pth")
    defaults = {"version": "1", "configuration": configuration,
                "dataset": plans.get("dataset_name", "Dataset999_Radflow"),
                "trainer": TRAINER_NAME, "plans": plans.get("plans_name", "nnUNetPlans"),
                "folds": ["all"],
                "modality": next(iter(dataset_json["channel_names"].values())),
                "labels": dataset_json["labels"],
                "inference": {"patch_size": list(patch), "tile_step_size": 0.75,
                              "use_mirroring": False}}
    (out / "radflow-model.json").write_text(json.dumps(defaults | card, indent=2))
    return out
