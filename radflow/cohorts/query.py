"""Compile a cohort definition to SQL over the catalog's series table, and run it."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from typing import Any

from sqlalchemy import and_, exists, false, func, not_, or_, true
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from radflow.catalog.models import Finding, Series
from radflow.cohorts import columns
from radflow.cohorts.definition import FIELDS, CohortDefinition
from radflow.enums import ResultKind
from radflow.results.current import HasCurrentResult

KINDS = {k.value for k in ResultKind}

logger = logging.getLogger(__name__)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _finding(op: str, value: Any) -> ColumnElement[bool]:
    """A condition on the series' findings: ``eq``/``in``/``contains`` hold when one finding
    matches, ``ne``/``not_in`` when none does; ``exists`` when the series has any finding."""
    code = func.lower(col(Finding.code))
    if op in ("in", "not_in"):
        match = code.in_(value)
    elif op == "contains":
        match = code.like(f"%{_like_escape(value)}%", escape="\\")
    elif op == "exists":
        match = true()
    else:  # eq, ne
        match = code == value
    found = exists().where(col(Finding.series_pk) == col(Series.id), match)
    if op == "exists":
        return found if value else not_(found)
    return not_(found) if op in ("ne", "not_in") else found


def _condition(field: str, op: str, value: Any) -> ColumnElement[bool]:
    if field == "finding":
        return _finding(op, value)
    kind = FIELDS[field].kind
    column = getattr(Series, field)
    if op == "exists":
        return column.is_not(None) if value else column.is_(None)
    if kind == "text":
        column = func.lower(column)
    if kind == "date":
        value = [date.fromisoformat(v) for v in value] if isinstance(value, list) \
            else date.fromisoformat(value)
    if op == "eq":
        return column == value
    if op == "ne":  # "not X" includes series where the field is unknown
        return or_(column.is_(None), column != value)
    if op == "in":
        return column.in_(value)
    if op == "not_in":
        return or_(column.is_(None), column.not_in(value))
    if op == "contains":
        return column.like(f"%{_like_escape(value)}%", escape="\\")
    if op == "between":
        return column.between(value[0], value[1])
    return {"lt": column < value, "lte": column <= value,
            "gt": column > value, "gte": column >= value}[op]


def to_sql(node: dict[str, Any]) -> ColumnElement[bool]:
    """The WHERE clause (over ``Series``) of a canonical filter node."""
    if "field" in node:
        return _condition(node["field"], node["op"], node["value"])
    key, value = next(iter(node.items()))
    if key == "all":
        return and_(true(), *[to_sql(v) for v in value])
    if key == "any":
        return or_(false(), *[to_sql(v) for v in value])
    if key == "not":
        return not_(to_sql(value))
    return _has_result(value)


def _has_result(kind: str) -> ColumnElement[bool]:
    """The series has a current result of ``kind`` (radflow.results.current: not rejected,
    superseded or corrected-and-replaced)."""
    if kind not in KINDS:
        return false()
    return HasCurrentResult(col(Series.series_uid), kind)


def _has_result_masks(session: Session, copy: columns.Columns) -> Callable[[str], Any]:
    """``has_result`` for the columnar copy: from the copy's own part when it is current (made
    again first when results changed), else read from the catalog once per kind and query."""
    found: dict[str, Any] = {}
    from_copy: list[Callable[[str], Any] | None] = []

    def masks(kind: str) -> Any:
        if kind not in found:
            if not from_copy:
                from_copy.append(columns.result_masks(session.connection(), copy))
            if from_copy[0] is not None:
                found[kind] = from_copy[0](kind)
            else:
                ids = session.exec(select(Series.id).where(_has_result(kind))).all()
                found[kind] = copy.mask_of(list(ids))
        return found[kind]

    return masks


def count_series(session: Session, definition: CohortDefinition) -> int:
    """How many series match (from the catalog's columnar copy when it is current)."""
    copy = columns.current(session.connection())
    if copy is not None:
        try:
            return copy.count(definition.where, _has_result_masks(session, copy))
        except OSError as exc:  # removed by a refresh in another process meanwhile
            logger.warning("the catalog's columnar copy is gone (%s): counting in SQL", exc)
    return session.exec(select(func.count()).select_from(Series).where(to_sql(definition.where))).one()


def select_series(session: Session, definition: CohortDefinition, limit: int | None = None,
                  offset: int = 0) -> list[Series]:
    """The matching series, oldest study first (``ORDER BY study_date, id``: where undated
    series go is the database's rule, first on SQLite and last on PostgreSQL); a page of them
    with ``limit`` and ``offset``."""
    copy = columns.current(session.connection()) if limit and limit <= columns.LIST_LIMIT else None
    if copy is not None:
        try:
            ids = copy.first_ids(definition.where, limit, offset,
                                 has_result=_has_result_masks(session, copy))
        except OSError as exc:
            logger.warning("the catalog's columnar copy is gone (%s): listing in SQL", exc)
        else:
            rows = {s.id: s for s in session.exec(select(Series).where(col(Series.id).in_(ids)))}
            return [rows[i] for i in ids]
    query = select(Series).where(to_sql(definition.where)).order_by(
        col(Series.study_date), col(Series.id))
    if limit:
        query = query.limit(limit)
    return list(session.exec(query.offset(offset) if offset else query))
