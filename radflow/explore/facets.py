"""The catalog dashboard's facets: counts per value (or per bin) of the series fields a
researcher filters on, computed in SQL, and the filter state that clicking them builds.

A filter state is a mapping facet -> chosen bucket keys (a URL's query string:
``?modality=CT&age=60&study_year=2021``). Every bucket stands for a condition of the cohort
language (``modality eq CT``, ``age_years gte 60`` and ``lt 70``, ``study_date between
2021-01-01 and 2021-12-31``), so a dashboard view *is* a cohort definition: the same JSON, the
same hash, savable from the cohort builder. Several buckets of one facet are alternatives
(``any``), facets combine with ``all``.

Each facet counts over the series that match every *other* facet's filter (the usual faceted
search), so the chosen bar stays visible beside its alternatives.

    state = parse_state({"modality": ["CT"]})
    with session_scope(url) as session:
        counts = facet_counts(session, state)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, literal_column
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select

from radflow.catalog.models import Finding, Series
from radflow.catalog.models.mirror import AGE_STEP, BUCKETS, THICKNESS_EDGES
from radflow.cohorts.definition import CohortDefinition
from radflow.cohorts.query import to_sql
from radflow.errors import ConfigurationError

TOP = 12  # values shown per categorical facet (the rest: "other")


def bucket_sql(key: str) -> ColumnElement[Any]:
    return literal_column(BUCKETS[key])


def _range_condition(field: str, edges: tuple[float, ...]) -> Callable[[str], dict[str, Any]]:
    def condition(key: str) -> dict[str, Any]:
        low = float(key)
        upper = [e for e in edges if e > low]
        parts = [{"field": field, "op": "gte", "value": low}]
        if upper:
            parts.append({"field": field, "op": "lt", "value": upper[0]})
        return {"all": parts}
    return condition


def _range_label(edges: tuple[float, ...], unit: str) -> Callable[[str], str]:
    def label(key: str) -> str:
        low = float(key)
        upper = [e for e in edges if e > low]
        return f"{low:g}–{upper[0]:g} {unit}" if upper else f"≥ {low:g} {unit}"
    return label


def _number_key(value: Any) -> str:
    return f"{float(value):g}"


@dataclass(frozen=True)
class Facet:
    """One chart: its SQL bucket expression, how a bucket key becomes a cohort condition, and
    how it is labelled. ``ordered`` facets (dates, bins) keep their order; the others are sorted
    by count."""

    key: str
    title: str
    bucket: Callable[[], ColumnElement[Any]]
    condition: Callable[[str], dict[str, Any]]
    label: Callable[[str], str] = str
    to_key: Callable[[Any], str] = str
    ordered: bool = False
    join_findings: bool = False


def _code(field: str) -> Callable[[str], dict[str, Any]]:
    return lambda key: {"field": field, "op": "eq", "value": key}


def _number(field: str) -> Callable[[str], dict[str, Any]]:
    return lambda key: {"field": field, "op": "eq", "value": float(key)}


FACETS: tuple[Facet, ...] = (
    Facet("modality", "Modality", lambda: col(Series.modality), _code("modality")),
    Facet("body_part", "Body part", lambda: col(Series.body_part), _code("body_part")),
    Facet("manufacturer", "Manufacturer", lambda: bucket_sql("manufacturer"),
          lambda k: {"field": "manufacturer", "op": "eq", "value": k}),
    Facet("model", "Scanner model", lambda: bucket_sql("model"),
          lambda k: {"field": "model", "op": "eq", "value": k}),
    Facet("field_strength", "Field strength (MR)", lambda: bucket_sql("field_strength"),
          _number("field_strength"), lambda k: f"{k} T", _number_key, ordered=True),
    Facet("kvp", "kVp (CT)", lambda: bucket_sql("kvp"), _number("kvp"),
          lambda k: f"{k} kV", _number_key, ordered=True),
    Facet("slice_thickness", "Slice thickness",
          lambda: bucket_sql("slice_thickness"),
          _range_condition("slice_thickness", THICKNESS_EDGES),
          _range_label(THICKNESS_EDGES, "mm"), _number_key, ordered=True),
    Facet("slice_spacing", "Slice spacing",
          lambda: bucket_sql("slice_spacing"),
          _range_condition("slice_spacing", THICKNESS_EDGES),
          _range_label(THICKNESS_EDGES, "mm"), _number_key, ordered=True),
    Facet("study_year", "Study date (year)",
          lambda: bucket_sql("study_year"),
          lambda k: {"field": "study_date", "op": "between",
                     "value": [f"{int(k):04d}-01-01", f"{int(k):04d}-12-31"]},
          to_key=lambda v: str(int(v)), ordered=True),
    Facet("age", "Age at study",
          lambda: bucket_sql("age"),
          lambda k: {"all": [{"field": "age_years", "op": "gte", "value": float(k)},
                             {"field": "age_years", "op": "lt", "value": float(k) + AGE_STEP}]},
          lambda k: f"{int(float(k))}–{int(float(k)) + AGE_STEP - 1} y",
          lambda v: str(int(v)), ordered=True),
    Facet("patient_sex", "Sex", lambda: bucket_sql("patient_sex"), _code("patient_sex")),
    Facet("status", "Series status", lambda: bucket_sql("status"),
          lambda k: {"field": "status", "op": "eq", "value": k},
          to_key=lambda v: getattr(v, "value", str(v))),
    Facet("finding", "Findings", lambda: col(Finding.code),
          lambda k: {"field": "finding", "op": "eq", "value": k}, join_findings=True),
)
BY_KEY = {f.key: f for f in FACETS}


def parse_state(query: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The filter state of a query string (facet -> bucket keys); unknown names are ignored,
    bad bucket keys refused.

    Raises:
        ConfigurationError: a bucket key that is no value of its facet (e.g. ``age=old``).
    """
    state: dict[str, list[str]] = {}
    for key, values in query.items():
        if key not in BY_KEY:
            continue
        kept = sorted({v for v in values if v != ""})
        for value in kept:
            try:
                CohortDefinition.parse({"where": BY_KEY[key].condition(value)})
            except (ValueError, ConfigurationError) as exc:
                raise ConfigurationError(f"the dashboard filter {key}={value!r} is not valid",
                                         fix="remove it from the address, or click the "
                                             "facets again") from exc
        if kept:
            state[key] = kept
    return state


def where_of(state: Mapping[str, list[str]], without: str | None = None) -> dict[str, Any] | None:
    """The cohort filter of a state (``without`` one facet's own choice), or None for all."""
    parts = []
    for key, values in sorted(state.items()):
        if key == without:
            continue
        conditions = [BY_KEY[key].condition(v) for v in values]
        if len(conditions) > 1:
            parts.append({"any": conditions})
        elif "all" in conditions[0]:  # a bin's two bounds join the other conditions
            parts.extend(conditions[0]["all"])
        else:
            parts.append(conditions[0])
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"all": parts}


def definition_of(state: Mapping[str, list[str]]) -> CohortDefinition | None:
    """The state as a cohort definition (the builder's starting point), None when empty."""
    where = where_of(state)
    return CohortDefinition.parse({"where": where}) if where else None


def _where_sql(state: Mapping[str, list[str]], without: str | None) -> ColumnElement[bool] | None:
    where = where_of(state, without)
    return to_sql(CohortDefinition.parse({"where": where}).where) if where else None


def facet_counts(url: str, state: Mapping[str, list[str]], workers: int = 2) -> dict[str, Any]:
    """Every facet's buckets ``{key, label, count, chosen}`` and the total that matches the
    whole state: one GROUP BY per facet over the series table (findings: joined), run on
    ``workers`` connections at once (SQLite answers them in parallel)."""
    from concurrent.futures import ThreadPoolExecutor

    from radflow.catalog.db import get_engine

    where_all = _where_sql(state, None)
    total = select(func.count()).select_from(Series)
    queries: list[Any] = [total.where(where_all) if where_all is not None else total, total]
    for facet in FACETS:
        bucket = facet.bucket().label("bucket")
        query = select(bucket, func.count(func.distinct(col(Series.id))) if facet.join_findings
                       else func.count()).select_from(Series)
        if facet.join_findings:
            query = query.join(Finding, col(Finding.series_pk) == col(Series.id))
        where = where_all if facet.key not in state else _where_sql(state, facet.key)
        queries.append((query.where(where) if where is not None else query).group_by(bucket))
    engine = get_engine(url)

    def run(query: Any) -> list[Any]:
        with engine.connect() as connection:
            return list(connection.execute(query))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        answers = list(pool.map(run, queries))
    out: dict[str, Any] = {"total": answers[0][0][0], "catalog": answers[1][0][0], "facets": []}
    for facet, found in zip(FACETS, answers[2:], strict=True):
        rows = [(facet.to_key(b), n) for b, n in found if b is not None and b != ""]
        rows.sort(key=(lambda r: _sort_key(r[0])) if facet.ordered else (lambda r: (-r[1], r[0])))
        chosen = set(state.get(facet.key, ()))
        shown = rows if facet.ordered else rows[:TOP] + [r for r in rows[TOP:] if r[0] in chosen]
        out["facets"].append({
            "key": facet.key, "title": facet.title, "ordered": facet.ordered,
            "hidden": len(rows) - len(shown), "max": max((n for _, n in shown), default=0),
            "buckets": [{"key": k, "label": facet.label(k), "count": n, "chosen": k in chosen}
                        for k, n in shown]})
    return out


def _sort_key(key: str) -> tuple[int, float | str]:
    try:
        return (0, float(key))
    except ValueError:
        return (1, key)


def chips(state: Mapping[str, list[str]]) -> list[dict[str, str]]:
    """The active filters as removable chips: facet title, bucket label, and the state without
    that bucket (its link)."""
    out = []
    for key, values in sorted(state.items()):
        facet = BY_KEY[key]
        for value in values:
            out.append({"facet": facet.title, "label": facet.label(value), "key": key,
                        "value": value})
    return out
