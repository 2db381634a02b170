"""Which result of a case is current: one rule, written once over rows (:func:`current`) and
once in SQL (:func:`current_units`), used by every consumer (the feature export, Explore, the
site parts of federated flows, the ``has_result`` cohort condition, ``radflow results list``).

The rule (DESIGN.md: "corrected, then accepted, then draft; rejected and superseded never"):

* Results are grouped by **(source series, kind, line, segment)**.

  - The *line* of a result is the algorithm of the result at the root of its revision chain
    (``parent_id``): a clinician's correction (algorithm ``correction``) and a result recomputed
    by ``--force`` belong to the line of the result they revise, so after a correction the
    current SEG of the model's (series, SEG, model) is the correction.
  - The *segment* is the one a feature row describes (an SR is current per segment of its
    feature table); a result without feature rows (a SEG) is one unit with no segment.

* In a group the current result is the first by: **the correction** of a result marked
  ``corrected``, then **accepted**, then **draft**; among equals the newest (highest id).
  ``rejected`` and ``superseded`` results are never current, nor is a ``corrected`` one itself
  (it lives on as its correction).
* A result made from another one (``derived_from_id``: the SR of a SEG) can be current only when
  that one is current: the SR of a rejected, corrected or superseded SEG never is. This is
  decided level by level (results made from series first, then those made from them...), at
  most :data:`DEPTH` levels, each level's groups among that level's results.

Both forms give the same answer (``tests/test_results_current.py`` compares them on random rows,
on SQLite and PostgreSQL). Training labels are current SEGs that are accepted or a correction.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any, ClassVar

from sqlalchemy import (
    Boolean,
    Integer,
    String,
    and_,
    case,
    column,
    func,
    or_,
    select,
    table,
    union_all,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.selectable import CTE
from sqlalchemy.sql.visitors import InternalTraversal
from sqlmodel import col
from sqlmodel import select as scalars  # one column: a session's exec() gives its values

from radflow.catalog.models import DerivedResult, FeatureValue
from radflow.enums import ResultKind, ResultStatus

ELIGIBLE = (ResultStatus.DRAFT, ResultStatus.ACCEPTED)  # a corrected one: as its correction
DEPTH = 3  # series -> SEG -> SR -> (a table made from an SR)
CORRECTION, ACCEPTED, DRAFT = 0, 1, 2  # ranks: lower wins

Group = tuple[str, str, str, str | None]  # series, kind, line, segment


def _status(row: Any) -> ResultStatus:
    return ResultStatus(getattr(row.status, "value", row.status))


def _kind(row: Any) -> str:
    return ResultKind(getattr(row.kind, "value", row.kind)).value


def line_of(row: Any, by_id: Mapping[int, Any]) -> str | None:
    """The algorithm at the root of a result's revision chain (None: the chain loops)."""
    seen = set()
    while row.parent_id is not None and row.parent_id in by_id:
        if row.id in seen:
            return None
        seen.add(row.id)
        row = by_id[row.parent_id]
    return row.algorithm


def rank_of(row: Any, by_id: Mapping[int, Any]) -> tuple[int, int]:
    """Where a result stands in its group (lower first): a correction, accepted, draft; then
    the newest."""
    parent = by_id.get(row.parent_id) if row.parent_id is not None else None
    if parent is not None and _status(parent) == ResultStatus.CORRECTED:
        first = CORRECTION
    else:
        first = ACCEPTED if _status(row) == ResultStatus.ACCEPTED else DRAFT
    return first, -row.id


def current(rows: Iterable[Any],
            segments: Mapping[int, Iterable[str]] | None = None) -> dict[Group, Any]:
    """The current result of each group, over result rows (DerivedResult rows or any objects
    with ``id, source_series_uid, kind, algorithm, status, parent_id, derived_from_id``).

    Args:
        rows: every result of the series concerned (revision chains and the results they are
            made from included).
        segments: the segments of each result's feature rows (result id -> labels); a result
            with none is one unit without a segment.

    Returns:
        ``{(series, kind, line, segment): row}``.
    """
    rows = list(rows)
    by_id = {r.id: r for r in rows}
    segments = segments or {}
    winners: dict[Group, Any] = {}
    level_ids: set[int] | None = None
    for level in range(DEPTH):
        level_winners: dict[Group, Any] = {}
        for row in rows:
            if _status(row) not in ELIGIBLE:
                continue
            if (row.derived_from_id is not None) != (level > 0):
                continue
            if level > 0 and row.derived_from_id not in (level_ids or set()):
                continue
            line = line_of(row, by_id)
            if line is None:
                continue
            for segment in sorted(set(segments.get(row.id, ()))) or [None]:
                group = (row.source_series_uid, _kind(row), line, segment)
                best = level_winners.get(group)
                if best is None or rank_of(row, by_id) < rank_of(best, by_id):
                    level_winners[group] = row
        winners.update(level_winners)
        level_ids = {r.id for r in level_winners.values()}
        if not level_ids:
            break
    return winners


def current_ids(rows: Iterable[Any], segments: Mapping[int, Iterable[str]] | None = None
                ) -> set[int]:
    """The ids of the results that are current for at least one of their groups."""
    return {r.id for r in current(rows, segments).values()}


# -- the same rule in SQL ------------------------------------------------------------------

# the columns the rule reads, as light table clauses: building the statement stays cheap
_RESULT = table(DerivedResult.__tablename__, *(column(name, type_) for name, type_ in (
    ("id", Integer), ("source_series_uid", String), ("kind", String), ("algorithm", String),
    ("derived_from_id", Integer), ("parent_id", Integer), ("status", String))))
_FEATURE = table(FeatureValue.__tablename__, column("result_pk", Integer),
                 column("segment_label", String), column("source_series_uid", String))


def current_units(series_uids: Iterable[str] | Select | None = None) -> CTE:
    """The rule as SQL: one row per current (result, segment), columns ``id``,
    ``source_series_uid``, ``kind``, ``line``, ``segment`` (NULL for a result without feature
    rows). ``series_uids`` (UIDs, or a ``SELECT`` of them) limits it to those series (all of
    the catalog by default).

    Join it on ``id`` for current results, or on ``id`` and ``segment`` for current feature
    rows; it works on SQLite and PostgreSQL (a recursive CTE for the lines, window functions for
    the ranking).
    """
    uids = series_uids if series_uids is None or isinstance(series_uids, Select) \
        else list(series_uids)
    row, parent, child = _RESULT, _RESULT.alias(), _RESULT.alias()
    # the lines of revised results (a correction, a recomputation): from their chain's root
    anchor = select(row.c.id, parent.c.algorithm.label("line")).where(
        parent.c.id == row.c.parent_id, parent.c.parent_id.is_(None))
    if uids is not None:
        anchor = anchor.where(row.c.source_series_uid.in_(uids))
    chains = anchor.cte(recursive=True)
    chains = chains.union_all(select(child.c.id, chains.c.line).where(
        child.c.parent_id == chains.c.id))

    segments = select(_FEATURE.c.result_pk, _FEATURE.c.segment_label).distinct()
    if uids is not None:
        segments = segments.where(_FEATURE.c.source_series_uid.in_(uids))
    segments = segments.subquery()
    rank = case((parent.c.status == ResultStatus.CORRECTED.value, CORRECTION),
                (row.c.status == ResultStatus.ACCEPTED.value, ACCEPTED), else_=DRAFT)
    units = (select(row.c.id, row.c.source_series_uid, row.c.kind,
                    func.coalesce(chains.c.line, row.c.algorithm).label("line"),
                    row.c.derived_from_id, rank.label("rank"),
                    segments.c.segment_label.label("segment"))
             .select_from(row)
             .outerjoin(chains, chains.c.id == row.c.id)
             .outerjoin(parent, parent.c.id == row.c.parent_id)
             .outerjoin(segments, segments.c.result_pk == row.c.id)
             .where(row.c.status.in_([s.value for s in ELIGIBLE]),
                    or_(row.c.parent_id.is_(None), chains.c.id.is_not(None))))  # not in a loop
    if uids is not None:
        units = units.where(row.c.source_series_uid.in_(uids))
    units = units.cte()

    levels: list[CTE] = []
    for level in range(DEPTH):
        if level == 0:
            where = units.c.derived_from_id.is_(None)
        else:
            where = units.c.derived_from_id.in_(select(levels[-1].c.id))
        number = func.row_number().over(
            partition_by=[units.c.source_series_uid, units.c.kind, units.c.line,
                          units.c.segment],
            order_by=[units.c.rank, units.c.id.desc()])
        ranked = select(units.c.id, units.c.source_series_uid, units.c.kind, units.c.line,
                        units.c.segment, number.label("n")).where(where).subquery()
        levels.append(select(ranked.c.id, ranked.c.source_series_uid, ranked.c.kind,
                             ranked.c.line, ranked.c.segment).where(ranked.c.n == 1).cte())
    return union_all(*[select(level) for level in levels]).cte()


def current_result_ids(series_uids: Iterable[str] | None = None) -> Select:
    """``SELECT id`` of the current results (for ``DerivedResult.id IN (...)``)."""
    units = current_units(series_uids)
    return scalars(units.c.id).distinct()


@lru_cache(maxsize=16)
def series_with_current(kind: ResultKind | str) -> Select:
    """``SELECT source_series_uid`` of the series that have a current result of ``kind``
    (built once per kind: statements are immutable)."""
    units = current_units()
    return scalars(units.c.source_series_uid).where(
        units.c.kind == ResultKind(kind).value).distinct()


class HasCurrentResult(ColumnElement[bool]):
    """``series_uid IN (the series with a current result of kind)``: the ``has_result`` cohort
    condition. Its SQL is compiled once per database dialect and kind, not with every cohort
    query that holds it (the rule's SQL is long; a cohort's query is compiled once per shape)."""

    inherit_cache = True
    type = Boolean()
    _traverse_internals: ClassVar = [("series_uid", InternalTraversal.dp_clauseelement),
                                     ("kind", InternalTraversal.dp_string)]

    def __init__(self, series_uid: Any, kind: ResultKind | str) -> None:
        self.series_uid = series_uid
        self.kind = ResultKind(kind).value


@lru_cache(maxsize=32)
def _series_sql(dialect: Dialect, kind: str) -> str:
    return str(series_with_current(kind).compile(dialect=dialect,
                                                 compile_kwargs={"literal_binds": True}))


@compiles(HasCurrentResult)
def _has_current_result(element: HasCurrentResult, compiler: Any, **kw: Any) -> str:
    series = _series_sql(compiler.dialect, element.kind)
    return f"{compiler.process(element.series_uid, **kw)} IN ({series})"


def current_features_join(units: CTE) -> Any:
    """The ON clause joining feature rows to current (result, segment) units."""
    return and_(units.c.id == col(FeatureValue.result_pk),
                units.c.segment == col(FeatureValue.segment_label))
