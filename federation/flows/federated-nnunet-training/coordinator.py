"""The coordinator part of federated-nnunet-training (runs on the hub): the shared plan from the
sites' fingerprints, FedAvg between rounds, the validation, the model package
(radflow_nnunet.federated.study_hub)."""

from __future__ import annotations

from radflow_nnunet.federated.study_hub import charts, combine, first_round, next_round

__all__ = ["charts", "combine", "first_round", "next_round"]
