"""Federated nnU-Net training: the building blocks a site and the hub use (labels, plans,
weights)."""
