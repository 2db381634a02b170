"""A cohort definition evaluated over the catalog's columnar copy
(:mod:`radflow.cohorts.columns`), with SQL's three-valued logic: every node gives a pair of
masks, (true, false); a position in neither is unknown, as SQL's NULL. ``not`` swaps the pair,
so ``not`` of a condition on an unknown value stays unknown; ``ne`` and ``not_in`` hold where
the field is unknown, as the SQL of :mod:`radflow.cohorts.query` says.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, Any

import numpy as np

from radflow.cohorts.definition import FIELDS

if TYPE_CHECKING:
    from radflow.cohorts.columns import Columns

EPOCH = np.datetime64("1970-01-01", "D")  # dates are kept as days since this one
HasResult = Callable[[str], np.ndarray]


def evaluate(cols: Columns, node: dict[str, Any], has_result: HasResult
             ) -> tuple[np.ndarray, np.ndarray]:
    """The (true, false) masks of a canonical filter node over the copy's positions.

    ``has_result(kind)`` gives the positions of the series with a current result of that kind
    (radflow.results.current): from the copy's has_result part when it is current
    (:func:`radflow.cohorts.columns.result_masks`), else read from the catalog.
    """
    if "field" in node:
        return _condition(cols, node["field"], node["op"], node["value"])
    key, value = next(iter(node.items()))
    if key == "not":
        true, false = evaluate(cols, value, has_result)
        return false, true
    if key in ("all", "any"):
        parts = [evaluate(cols, child, has_result) for child in value]
        true, false = parts[0][0].copy(), parts[0][1].copy()
        for t, f in parts[1:]:
            if key == "all":
                true &= t
                false |= f
            else:
                true |= t
                false &= f
        return true, false
    found = has_result(value)
    return found, ~found


def _hits(words: list[str], test: Callable[[str], bool]) -> np.ndarray:
    """Which entries of a dictionary pass the test."""
    return np.fromiter((bool(test(w)) for w in words), dtype=bool, count=len(words))


def _linked(cols: Columns, name: str, test: Callable[[str], bool]) -> np.ndarray:
    """Series with at least one linked row (a finding) whose word passes."""
    hit = _hits(cols.words(name), test)
    rows = cols.array(f"{name}_pos")[hit[cols.array(f"{name}_code")]] if hit.size else []
    found = np.zeros(cols.size, dtype=bool)
    found[rows] = True
    return found


def _word_test(op: str, value: Any) -> Callable[[str], bool]:
    if op in ("eq", "ne"):
        return lambda w: w == value
    if op in ("in", "not_in"):
        wanted = set(value)
        return lambda w: w in wanted
    if op == "contains":
        return lambda w: value in w
    return lambda w: True  # exists


def _condition(cols: Columns, name: str, op: str, value: Any) -> tuple[np.ndarray, np.ndarray]:
    negated = op in ("ne", "not_in")  # SQL: "not X" also holds where the field is unknown
    if name == "finding":
        found = _linked(cols, "finding", _word_test(op, value))
        if op == "exists" and not value:
            negated = True
        return (~found, found) if negated else (found, ~found)
    kind = FIELDS[name].kind
    column = cols.array(name)
    # numbers and dates: NaN is unknown; codes, text and booleans: -1
    known = ~np.isnan(column) if kind in ("number", "date") else column >= 0
    if op == "exists":
        return (known, ~known) if value else (~known, known)
    if kind in ("code", "text"):
        hit = _hits(cols.words(name), _word_test(op, value))
        match = np.append(hit, False)[column]  # -1 (unknown) reads the appended False
    else:
        if kind == "bool":
            value = int(value)
        elif kind == "date":
            value = [_days(v) for v in value] if isinstance(value, list) else _days(value)
        match = _compare(column, op, value)
    if negated:
        return ~match, match  # match is false where unknown, so ~match holds there
    return match, known & ~match


def _days(value: str) -> float:
    return float((np.datetime64(date.fromisoformat(value), "D") - EPOCH).astype(np.int64))


def _compare(column: np.ndarray, op: str, value: Any) -> np.ndarray:
    if op in ("eq", "ne"):
        return column == value
    if op in ("in", "not_in"):
        return np.isin(column, value)
    if op == "between":
        return (column >= value[0]) & (column <= value[1])
    return {"lt": np.less, "lte": np.less_equal, "gt": np.greater,
            "gte": np.greater_equal}[op](column, value)
