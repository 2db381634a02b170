"""Federated nnU-Net training: the building blocks a site and the hub use (labels from reviewed
SEGs and their split, the federated fingerprint and the shared plan, the local round, the
validation and the model export)."""
