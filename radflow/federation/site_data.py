"""What a federated flow's site part reads from the site's catalog: the radiomics features of a
cohort's series, one value per series, feature and segment (from the current result, by the
one rule of radflow.results.current), with the series' covariates. Nothing here leaves the
site: the site part turns it into the aggregates its release schema declares.

    table = feature_table(site_catalog_url, cohort, ["original_firstorder_Mean"], ["liver"])
    table.values("original_firstorder_Mean", "liver")     # numpy array, one value per series
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class FeatureTable:
    """One row per series of the cohort that has features."""

    series: list[str] = field(default_factory=list)  # series UIDs (stay at the site)
    covariates: list[dict[str, Any]] = field(default_factory=list)  # sex, age, vendor, contrast
    cells: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)

    def values(self, feature: str, segment: str) -> np.ndarray:
        """The feature's values for the segment, one per series that has it."""
        found = self.cells.get((feature, segment), {})
        return np.array([found[s] for s in self.series if s in found], dtype=float)

    def column(self, feature: str, segment: str) -> list[float | None]:
        """The feature per series (None where a series lacks it), aligned with ``series``."""
        found = self.cells.get((feature, segment), {})
        return [found.get(s) for s in self.series]


def feature_table(catalog_url: str, cohort: dict[str, Any], features: list[str],
                  segments: list[str]) -> FeatureTable:
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import FeatureValue, Series
    from radflow.cohorts.definition import CohortDefinition
    from radflow.cohorts.query import select_series
    from radflow.results.current import current_features_join, current_units

    definition = CohortDefinition.parse(cohort)
    table = FeatureTable()
    with session_scope(catalog_url) as session:
        chosen: dict[str, Series] = {}
        for s in select_series(session, definition):
            chosen.setdefault(s.series_uid, s)
        if not chosen:
            return table
        units = current_units(list(chosen))
        rows = session.exec(
            select(FeatureValue)
            .join(units, current_features_join(units))
            .where(col(FeatureValue.source_series_uid).in_(list(chosen)),
                   col(FeatureValue.feature).in_(features),
                   col(FeatureValue.segment_label).in_(segments))
            .order_by(col(FeatureValue.result_pk), col(FeatureValue.id))).all()
        for value in rows:  # one current result per line: of two algorithms' tables, the newer
            table.cells.setdefault((value.feature, value.segment_label), {})[
                value.source_series_uid] = float(value.value)
        have = {uid for cell in table.cells.values() for uid in cell}
        for uid in sorted(have):
            s = chosen[uid]
            table.series.append(uid)
            table.covariates.append({"sex": s.patient_sex, "age": s.age_years,
                                     "vendor": s.manufacturer, "contrast": bool(s.contrast)})
    return table
