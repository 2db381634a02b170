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

from sqlalchemy import func
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select

from radflow.catalog.models import Finding, Series
from radflow.catalog.models.mirror import AGE_STEP, THICKNESS_EDGES, bucket_expression
from radflow.cohorts.definition import CohortDefinition
from radflow.cohorts.query import to_sql
from radflow.errors import ConfigurationError

TOP = 12  # values shown per categorical facet (the rest: "other")
# When at least this share of the catalog matches, a facet reads its index in bucket order
# (no sort; each row is looked up to test the filter); below it, a scan of the table that
# sorts only the matching rows is faster (bench/bench_explore.py measures both).
INDEXED_FRACTION = 0.35


class Bucket(ColumnElement[Any]):
    """A facet's bucket expression, written for the database it runs on."""

    inherit_cache = True

    def __init__(self, key: str) -> None:
        self.key = key


@compiles(Bucket)
def _bucket(element: Bucket, compiler: Any, **_kw: Any) -> str:
    return bucket_expression(element.key, compiler.dialect.name)


def bucket_sql(key: str) -> ColumnElement[Any]:
    return Bucket(key)


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


def _facet_query(facet: Facet, where: ColumnElement[bool] | None) -> Any:
    """One facet's GROUP BY over the series table (its index gives the buckets in order)."""
    bucket = facet.bucket().label("bucket")
    query = select(bucket, func.count(func.distinct(col(Series.id))) if facet.join_findings
                   else func.count()).select_from(Series)
    if facet.join_findings:
        query = query.join(Finding, col(Finding.series_pk) == col(Series.id))
    return (query.where(where) if where is not None else query).group_by(bucket)


def _on_series(engine: Any, state: Mapping[str, list[str]], where_all: Any,
               workers: int) -> list[list[Any]]:
    """Each facet as its own query over the series table, ``workers`` at a time: best when
    much of the catalog matches (each reads its index in order, no sort)."""
    from concurrent.futures import ThreadPoolExecutor

    queries = [_facet_query(f, where_all if f.key not in state else _where_sql(state, f.key))
               for f in FACETS]

    def run(query: Any) -> list[Any]:
        with engine.connect() as connection:
            return list(connection.execute(query))

    with ThreadPoolExecutor(max(1, workers)) as pool:
        return list(pool.map(run, queries))


def _on_matches(engine: Any, state: Mapping[str, list[str]]) -> list[list[Any]]:
    """The facets when few series match: the matching series go to a temporary table with
    every bucket in one pass (the filter is evaluated once, not once per facet), and each facet
    without a filter of its own groups those rows. Meanwhile, on a second connection, each
    facet with a filter of its own is counted over the series table without it."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import text

    plain = [f for f in FACETS if not f.join_findings]
    source = select(col(Series.id).label("id"),
                    *[f.bucket().label(f"b_{f.key}") for f in plain])
    where_all = _where_sql(state, None)
    if where_all is not None:
        source = source.where(where_all)
    create = source.into("explore_facet_rows", temporary=True)
    rows = create.table

    def matching() -> dict[str, list[Any]]:
        answers = {}
        with engine.connect() as connection:
            connection.execute(text("DROP TABLE IF EXISTS explore_facet_rows"))
            connection.execute(create)
            for facet in FACETS:
                if facet.key in state:
                    continue
                if facet.join_findings:
                    query = (select(col(Finding.code), func.count(func.distinct(rows.c.id)))
                             .select_from(rows.join(Finding,
                                                    col(Finding.series_pk) == rows.c.id))
                             .group_by(col(Finding.code)))
                else:
                    bucket = rows.c[f"b_{facet.key}"]
                    query = select(bucket, func.count()).group_by(bucket)
                answers[facet.key] = list(connection.execute(query))
            connection.execute(text("DROP TABLE explore_facet_rows"))
            connection.rollback()
        return answers

    def own(facet: Facet) -> list[Any]:
        with engine.connect() as connection:
            return list(connection.execute(_facet_query(facet, _where_sql(state, facet.key))))

    with ThreadPoolExecutor(2) as pool:
        others = pool.submit(matching)
        filtered = {f.key: pool.submit(own, f) for f in FACETS if f.key in state}
        answers = others.result() | {key: job.result() for key, job in filtered.items()}
    return [answers[f.key] for f in FACETS]


def facet_counts(url: str, state: Mapping[str, list[str]], workers: int = 2,
                 indexed: bool | None = None) -> dict[str, Any]:
    """Every facet's buckets ``{key, label, count, chosen}``, the number of series that match
    the whole state and the catalog's size.

    Args:
        workers: connections for the per-facet queries (SQLite answers them in parallel).
        indexed: per-facet queries over the series table (True) or one pass into a temporary
            table (False); None picks by the share of the catalog that matches.
    """
    from radflow.catalog.db import get_engine

    engine = get_engine(url)
    where_all = _where_sql(state, None)
    total = select(func.count()).select_from(Series)
    with engine.connect() as connection:
        matched = connection.execute(total.where(where_all) if where_all is not None
                                     else total).scalar_one()
        catalog = connection.execute(total).scalar_one()
    if indexed is None:
        indexed = not state or matched >= INDEXED_FRACTION * catalog \
            or engine.dialect.name != "sqlite"
    answers = _on_series(engine, state, where_all, workers) if indexed \
        else _on_matches(engine, state)
    out: dict[str, Any] = {"total": matched, "catalog": catalog, "facets": []}
    for facet, found in zip(FACETS, answers, strict=True):
        rows = [(facet.to_key(b), n) for b, n in found if b is not None and b != ""]
        if facet.key == "study_year" and rows:  # a histogram over time: empty years too
            years = {int(k) for k, _ in rows}
            rows += [(str(y), 0) for y in range(min(years), max(years) + 1) if y not in years]
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
