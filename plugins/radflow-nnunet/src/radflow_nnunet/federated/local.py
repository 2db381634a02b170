"""A site's local round of federated nnU-Net training: E epochs of I iterations from the global
weights, on the site's training cases, returning the new weights only.

How a round drives nnU-Net: ``RadflowTrainer`` (nnU-Net's trainer with Adam and poly decay) is
instantiated directly and initialised (network, optimizer, nnU-Net's Dice + cross-entropy loss
with deep supervision); the global weights are copied into its network; then this module runs
the loop itself with nnU-Net's own pieces: its training transforms (all of nnU-Net's data
augmentation), its data loader (foreground oversampling) and its ``train_step`` (loss, gradient
clipping at 12). It never calls ``run_training``: that one validates every epoch, writes
``checkpoint_best``/``checkpoint_final`` (which hold the optimizer state) and, through nnU-Net's
launcher, predicts the validation cases at the end; a round is not a whole training. Checkpoints
are disabled, and the trainer's scratch folder (its log) is removed after the round: nothing
that holds an optimizer state is left behind.

Choices:
- Adam restarts every round (no optimizer state crosses rounds or leaves the site; it would
  double the bytes and is site-specific). The learning rate follows one poly decay over the
  whole study: epoch ``e`` of round ``r`` (0-based) uses
  ``lr0 * (1 - (r * E + e) / (R * E)) ** 0.9`` for ``R`` rounds, as if one model trained
  ``R * E`` epochs.
- ``cases_trained`` is the number of training cases the round drew from (the site's training
  set), the weight FedAvg gives a site; the distinct cases actually sampled in the round are
  reported separately (``cases_sampled``): with a few iterations they are a random subset.
- Deterministic for a seed on the CPU: numpy, ``random`` and torch are seeded from
  ``(seed, round_index)`` and data augmentation runs in this process (nnU-Net's augmentation
  workers are forked processes: their order is not reproducible, and a fork after torch has
  started its thread pool hung in a test here). On a site's 2 cores a worker would compete
  with training for the same cores anyway.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import random
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from radflow.errors import ConfigurationError
from radflow_nnunet.federated.weights import (
    CONFIGURATION,
    check_vector,
    export_model,
    initial_weights,
    layout,
    load_vector,
    network_layout,
    network_vector,
)

__all__ = ["LocalResult", "export_model", "initial_weights", "layout", "train_local"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalResult:
    """What a local round returns (the weights are what the site may release)."""

    vector_fp16: np.ndarray  # flat, layout order
    cases_trained: int  # training cases the round drew from (FedAvg's weight)
    cases_sampled: int  # distinct cases in the round's batches
    mean_train_loss: list[float] = field(default_factory=list)  # one per epoch
    learning_rates: list[float] = field(default_factory=list)  # one per epoch (poly decay)
    seconds: float = 0.0


def _nnunet_env(work: Path, preprocessed_base: Path) -> Any:
    """nnU-Net's trainer reads its folders from the environment while it is constructed."""
    from radflow_nnunet.federated.plan import environment

    return environment({"nnUNet_preprocessed": preprocessed_base, "nnUNet_results": work,
                        "nnUNet_raw": work / "raw", "nnUNet_compile": "false"})


def _case_folder(preprocessed_folder: Path, plans: dict, configuration: str) -> Path:
    """The folder of the configuration's preprocessed cases (given itself, or its dataset's)."""
    identifier = plans["configurations"][configuration]["data_identifier"]
    for candidate in (preprocessed_folder / identifier, preprocessed_folder):
        if candidate.is_dir() and any(candidate.glob("*.pkl")):
            return candidate
    raise ConfigurationError(
        f"{preprocessed_folder} holds no preprocessed cases of {identifier!r}",
        fix="preprocess the site's cases with the study plan first (nnU-Net's "
            "DefaultPreprocessor) and pass its dataset or configuration folder")


def _check_args(cases: Sequence[str], folder: Path, epochs: int, iterations: int,
                round_index: int, total_rounds: int) -> list[str]:
    if epochs < 1 or iterations < 1:
        raise ConfigurationError(f"a round needs at least 1 epoch of 1 iteration, got {epochs} "
                                 f"epochs x {iterations} iterations", fix="e.g. epochs=1, "
                                 "iterations=30")
    if not 0 <= round_index < total_rounds:
        raise ConfigurationError(f"round {round_index} is outside the study's {total_rounds} "
                                 "rounds", fix="round_index counts from 0 to total_rounds - 1")
    chosen = sorted(set(cases))
    if not chosen:
        raise ConfigurationError("no training cases", fix="pass the site's training case ids "
                                 "(the held-out cases excluded)")
    missing = [c for c in chosen if not (folder / f"{c}.pkl").exists()]
    if missing:
        raise ConfigurationError(f"training cases not preprocessed in {folder}: "
                                 f"{', '.join(missing[:5])}" + (" ..." if len(missing) > 5 else ""),
                                 fix="preprocess every training case with the study plan")
    return chosen


def _train_loader(trainer: Any, folder: Path, cases: list[str]) -> Any:
    """nnU-Net's training data loader and augmentation (as ``get_dataloaders`` builds them),
    over ``cases`` only, without its validation loader."""
    from batchgenerators.dataloading.single_threaded_augmenter import SingleThreadedAugmenter
    from nnunetv2.training.dataloading.data_loader import nnUNetDataLoader

    patch = trainer.configuration_manager.patch_size
    rotation, dummy_2d, initial_patch, mirror_axes = \
        trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    labels = trainer.label_manager
    transforms = trainer.get_training_transforms(
        patch, rotation, trainer._get_deep_supervision_scales(), mirror_axes, dummy_2d,
        use_mask_for_norm=trainer.configuration_manager.use_mask_for_norm, is_cascaded=False,
        foreground_labels=labels.foreground_labels,
        regions=labels.foreground_regions if labels.has_regions else None,
        ignore_label=labels.ignore_label)
    dataset = trainer.dataset_class(str(folder), cases, folder_with_segs_from_previous_stage=None)
    loader = nnUNetDataLoader(dataset, trainer.batch_size, initial_patch, patch, labels,
                              oversample_foreground_percent=trainer.oversample_foreground_percent,
                              sampling_probabilities=None, pad_sides=None, transforms=transforms,
                              probabilistic_oversampling=trainer.probabilistic_oversampling)
    return SingleThreadedAugmenter(loader, None)


def _seed_everything(seed: int) -> int:
    import torch

    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    return seed


def train_local(preprocessed_folder: str | Path, plans: dict, dataset_json: dict,
                global_vector: Any, *, cases: Sequence[str], epochs: int, iterations: int,
                round_index: int, total_rounds: int, seed: int, work: str | Path,
                configuration: str = CONFIGURATION, device: str = "cpu") -> LocalResult:
    """One local round: load the global weights, train ``epochs`` x ``iterations`` batches on
    the site's training cases with nnU-Net's augmentation and loss, return the new weights.

    Args:
        preprocessed_folder: the site's cases preprocessed with the study plan: nnU-Net's
            dataset folder (``.../nnUNet_preprocessed/DatasetX``) or its configuration's
            folder (``.../DatasetX/<data_identifier>``).
        plans, dataset_json: the study's shared plan and dataset.json.
        global_vector: the global weights, flat in ``layout`` order (fp16 or fp32).
        cases: the training case ids (the held-out cases must not be among them).
        epochs, iterations: the round's budget (E epochs of I batches).
        round_index, total_rounds: this round (from 0) and the study's number of rounds: the
            learning rate decays over all of them (see the module's docstring).
        seed: the study's seed; the round's random streams come from (seed, round_index).
        work: a scratch folder of the site; the trainer's log goes there and is removed.
        device: where to train ("cpu", or "cuda" where the site has a GPU; torch.compile off:
            the weights keep the network's own names).

    Returns:
        The new weights as a flat fp16 vector, the cases trained and sampled, the mean loss
        and the learning rate of each epoch, and the seconds the round took.

    Raises:
        ConfigurationError: a case that is not preprocessed, a weight vector that does not fit
            the plan, a budget or round number out of range.
    """
    import torch

    from radflow_nnunet._trainer import RadflowTrainer

    began = time.perf_counter()
    preprocessed_folder, work = Path(preprocessed_folder), Path(work)
    folder = _case_folder(preprocessed_folder, plans, configuration)
    chosen = _check_args(cases, folder, epochs, iterations, round_index, total_rounds)
    work.mkdir(parents=True, exist_ok=True)
    _seed_everything(int(seed) * 1009 + int(round_index))
    run_plans = copy.deepcopy(plans)
    run_plans["continue_training"] = False  # nnU-Net's launcher sets it; the trainer pops it
    with _nnunet_env(work, folder.parent), contextlib.redirect_stdout(io.StringIO()):
        trainer = RadflowTrainer(run_plans, configuration, "all", dataset_json,
                                 device=torch.device(device))
    scratch = Path(trainer.output_folder_base)
    try:
        with _nnunet_env(work, folder.parent), contextlib.redirect_stdout(io.StringIO()):
            trainer.disable_checkpointing = True
            trainer.preprocessed_dataset_folder = str(folder)
            trainer.num_epochs = total_rounds * epochs  # the poly decay spans the study
            trainer.num_iterations_per_epoch = iterations
            trainer.initialize()
            check_vector(global_vector, network_layout(trainer.network))
            load_vector(trainer.network, global_vector)
            trainer.dataset_class.unpack_dataset(str(folder), overwrite_existing=False,
                                                 num_processes=1, verify=True)
            loader = _train_loader(trainer, folder, chosen)
            trainer.set_deep_supervision_enabled(True)
            losses, rates, sampled = [], [], set()
            for epoch in range(epochs):
                trainer.current_epoch = round_index * epochs + epoch
                trainer.network.train()
                trainer.lr_scheduler.step(trainer.current_epoch)
                rates.append(float(trainer.optimizer.param_groups[0]["lr"]))
                epoch_losses = []
                for _ in range(iterations):
                    batch = next(loader)
                    sampled.update(str(k) for k in batch["keys"])
                    epoch_losses.append(float(trainer.train_step(batch)["loss"]))
                losses.append(float(np.mean(epoch_losses)))
                log.info("round %d epoch %d: lr %.2e, mean loss %.4f", round_index, epoch,
                         rates[-1], losses[-1])
            vector = network_vector(trainer.network)
    finally:
        trainer.optimizer = trainer.lr_scheduler = None
        shutil.rmtree(scratch, ignore_errors=True)
    half = vector.astype(np.float16)
    check_vector(half, network_layout(trainer.network))  # diverged, or beyond fp16's range
    return LocalResult(half, len(chosen), len(sampled), losses, rates,
                       round(time.perf_counter() - began, 2))
