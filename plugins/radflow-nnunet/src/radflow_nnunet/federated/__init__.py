"""Federated nnU-Net training (phase 12): building blocks that a site and the hub share."""
