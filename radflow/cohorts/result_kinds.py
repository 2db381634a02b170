"""The ``has_result`` part of the catalog's columnar copy (:mod:`radflow.cohorts.columns`): per
series, a bitmask of the result kinds that have a *current* result for it, read with the rule's
own SQL (:func:`radflow.results.current.current_units`, the one rule: corrected, then accepted,
then draft; rejected and superseded never; an SR of a non-current SEG is not current).

The part is current while the catalog's results generation (row 2 of ``catalog_generation``,
migration 0011) equals the one it was read at; it is made again on its own, without the rest of
the copy, after a pipeline run or a review decision.
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import select
from sqlalchemy.engine import Connection

from radflow.catalog.models import Series
from radflow.enums import ResultKind
from radflow.results.current import current_units

KINDS = [kind.value for kind in ResultKind]  # bit i: KINDS[i]
RESULTS_ROW = 2  # the row of catalog_generation that counts what the rule reads
_DTYPE = np.uint8 if len(KINDS) <= 8 else np.uint32


def results_generation(connection: Connection) -> int | None:
    """The catalog's results generation as this connection sees it (None: none kept)."""
    value = connection.exec_driver_sql(
        f"SELECT value FROM catalog_generation WHERE id = {RESULTS_ROW}").scalar()
    return None if value is None else int(value)


def read(connection: Connection, ids: np.ndarray) -> np.ndarray:
    """The bitmask of current result kinds of each series, for the series ids ``ids`` (the
    copy's positions), read with the rule's SQL in one statement."""
    units = current_units()
    current = select(units.c.source_series_uid, units.c.kind).distinct().subquery()
    series = Series.__table__
    rows = connection.execute(
        select(series.c.id, current.c.kind).distinct()
        .join_from(series, current, series.c.series_uid == current.c.source_series_uid)).all()
    bits = np.zeros(len(ids), dtype=_DTYPE)
    if not rows or not len(ids):
        return bits
    found = np.array([r[0] for r in rows], dtype=np.int64)
    kinds = np.array([KINDS.index(ResultKind(r[1]).value) for r in rows], dtype=np.int64)
    sorter = np.argsort(ids)
    at = np.searchsorted(ids, found, sorter=sorter).clip(0, len(ids) - 1)
    known = ids[sorter[at]] == found  # a series added since the copy was read: not in it
    np.bitwise_or.at(bits, sorter[at[known]], (1 << kinds[known]).astype(_DTYPE))
    return bits


def mask(bits: np.ndarray, words: list[str], kind: str) -> np.ndarray:
    """The positions of the series with a current result of ``kind``."""
    if kind not in words:
        return np.zeros(len(bits), dtype=bool)
    return (bits & _DTYPE(1 << words.index(kind))) != 0
