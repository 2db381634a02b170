"""Federated nnU-Net: the building blocks of radflow's federated training (issue 24)."""
