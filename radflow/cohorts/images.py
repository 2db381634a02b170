"""What counts as an image series: the one rule that every count of "series" a person reads
uses (Explore's dashboard, the cohort builder started from it, the hub's federated counts).

A *derived object* is not an image series: a segmentation (SEG), a structured report (SR), an
RT structure set, a presentation state (PR), a key-object selection (KO), a registration...,
whether radflow made it or a workstation did, and anything radflow wrote itself (its
Manufacturer is ``radflow``). Derived objects stay in the catalog, each linked to the series it
was made from (``source_series_uid``), and a series' page lists them.

The rule is a filter of the cohort language (:data:`IMAGE_SERIES`), so that it means the same in
SQL, in the catalog's columnar copy and at every site, and a cohort that carries it has the same
hash everywhere:

    definition = CohortDefinition.parse({"where": images_only(where)})
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from radflow.cohorts.definition import CohortDefinition, normalize
from radflow.cohorts.query import count_series, to_sql

# DICOM Modality defined terms of objects that are made from images, or hold no image
# (PS3.3 C.7.3.1.1.1): structures, documents, reports, states, models and waveforms.
DERIVED_MODALITIES = ("ASMT", "AU", "DOC", "ECG", "FID", "HD", "KO", "M3D", "PLAN", "PR",
                      "REG", "RTDOSE", "RTPLAN", "RTRECORD", "RTSTRUCT", "RWV", "SEG", "SR")
RADFLOW_MANUFACTURER = "radflow"  # what radflow writes as Manufacturer in its own objects

_CONDITIONS = [
    {"field": "modality", "op": "not_in", "value": list(DERIVED_MODALITIES)},
    {"field": "manufacturer", "op": "ne", "value": RADFLOW_MANUFACTURER},
]
IMAGE_SERIES: dict[str, Any] = normalize({"all": _CONDITIONS})
IMAGE_CONDITIONS: list[dict[str, Any]] = IMAGE_SERIES["all"]  # canonical, in canonical order


def is_image_series(modality: str | None, manufacturer: str | None) -> bool:
    """The rule for one series (its Modality and Manufacturer as the catalog holds them)."""
    derived = (modality or "").strip().upper() in DERIVED_MODALITIES
    own = (manufacturer or "").strip().casefold() == RADFLOW_MANUFACTURER
    return not (derived or own)


def images_only(where: dict[str, Any] | None) -> dict[str, Any]:
    """A canonical filter node: ``where`` (None: every series) and the image-series rule, as
    one flat ``all`` (the rule's conditions beside ``where``'s own, none repeated)."""
    if where is None:
        return IMAGE_SERIES
    node = normalize(where)
    parts = list(node["all"]) if "all" in node else [node]
    return normalize({"all": parts + [c for c in IMAGE_CONDITIONS if c not in parts]})


def image_series_sql() -> ColumnElement[bool]:
    """The rule as a WHERE clause over ``Series``."""
    return to_sql(IMAGE_SERIES)


def count_image_series(session: Session, definition: CohortDefinition | None = None) -> int:
    """How many image series the catalog holds (that ``definition`` selects, when given):
    "series" as the hub's counts mean it."""
    where = images_only(definition.where if definition is not None else None)
    return count_series(session, CohortDefinition.parse({"where": where}))
