"""Deterministic DICOM UIDs for what radflow derives (invariant 6: re-running anything stores
the same object again, never a copy)."""

from __future__ import annotations

import uuid

RADFLOW_UUID_NAMESPACE = uuid.UUID("5b0c1e7e-3f1d-5a0e-9c3b-7261646c6f77")


def derived_uid(*parts: str) -> str:
    """A deterministic UID for an object derived from ``parts`` (a result key, a role):
    ``2.25.`` and a name-based (version 5) UUID. (pydicom's ``generate_uid(prefix=None)`` is
    random.)"""
    name = "\x1f".join(str(p) for p in parts)
    return f"2.25.{uuid.uuid5(RADFLOW_UUID_NAMESPACE, name).int}"
