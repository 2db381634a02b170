"""The demo model's trainer: nnU-Net's trainer with Adam and poly decay, sized for CPUs.

Imported only by radflow_nnunet.training (after the nnU-Net folders are set in the
environment) and instantiated directly: nnU-Net never has to find it by name.
"""

from __future__ import annotations

import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class RadflowTrainer(nnUNetTrainer):
    """Adam (lr 2e-3, poly decay), few validation batches, checkpoints only at the end."""

    def __init__(self, plans: dict, configuration: str, fold, dataset_json: dict,
                 device: torch.device = torch.device("cpu")) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.initial_lr = 2e-3
        self.num_val_iterations_per_epoch = 5
        self.save_every = 10_000

    def configure_optimizers(self):
        optimizer = torch.optim.Adam(self.network.parameters(), lr=self.initial_lr,
                                     weight_decay=self.weight_decay)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)
