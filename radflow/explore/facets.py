"""The catalog dashboard's facets: counts per value (or per bin) of the series fields a
researcher filters on, computed in SQL. The filter state that clicking them builds, and the
cohort definition it is, are in :mod:`radflow.explore.state`.

Each facet counts over the series that match every *other* facet's filter (the usual faceted
search), so the chosen bar stays visible beside its alternatives. The counts are of image series
unless the state shows derived objects (:mod:`radflow.cohorts.images`); the scanner facets
count image series in either case.

    state = parse_state({"modality": ["CT"]})
    counts = facet_counts(catalog_url, state)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import func
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col, select

from radflow.catalog.models import Finding, Series
from radflow.cohorts.definition import CohortDefinition
from radflow.cohorts.images import image_series_sql
from radflow.cohorts.query import to_sql
from radflow.explore.state import (
    BY_KEY,
    DERIVED,
    FACETS,
    Facet,
    chips,
    definition_of,
    parse_state,
    shows_derived,
    where_of,
)

__all__ = ["BY_KEY", "DERIVED", "FACETS", "Facet", "chips", "definition_of", "facet_counts",
           "parse_state", "where_of"]

TOP = 12  # values shown per categorical facet (the rest: "other")
# When at least this share of the catalog matches, a facet reads its index in bucket order
# (no sort; each row is looked up to test the filter); below it, a scan of the table that
# sorts only the matching rows is faster (bench/bench_explore.py measures both).
INDEXED_FRACTION = 0.35


def _where_sql(state: Mapping[str, list[str]], without: str | None,
               scanner: bool = False) -> ColumnElement[bool] | None:
    where = where_of(state, without, scanner)
    return to_sql(CohortDefinition.parse({"where": where}).where) if where else None


def _own_filter(state: Mapping[str, list[str]], facet: Facet) -> bool:
    """Whether a facet counts under a filter other than the whole state's: its own choice left
    out, or a scanner facet's image-series rule while derived objects are shown."""
    return facet.key in state or (facet.scanner and shows_derived(state))


def _facet_where(state: Mapping[str, list[str]], facet: Facet) -> ColumnElement[bool] | None:
    return _where_sql(state, facet.key if facet.key in state else None, facet.scanner)


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

    queries = [_facet_query(f, _facet_where(state, f) if _own_filter(state, f) else where_all)
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
                if _own_filter(state, facet):
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
            return list(connection.execute(_facet_query(facet, _facet_where(state, facet))))

    with ThreadPoolExecutor(2) as pool:
        others = pool.submit(matching)
        filtered = {f.key: pool.submit(own, f) for f in FACETS if _own_filter(state, f)}
        answers = others.result() | {key: job.result() for key, job in filtered.items()}
    return [answers[f.key] for f in FACETS]


def facet_counts(url: str, state: Mapping[str, list[str]], workers: int = 2,
                 indexed: bool | None = None) -> dict[str, Any]:
    """Every facet's buckets ``{key, label, count, chosen}``, the number of series that match
    the whole state (``total``), the catalog's size in the same terms (``catalog``: its image
    series, or every series with derived objects shown), how many derived objects it holds
    (``derived_objects``) and whether they are counted (``derived``).

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
        everything = connection.execute(total).scalar_one()
        images = connection.execute(total.where(image_series_sql())).scalar_one()
    derived = shows_derived(state)
    catalog = everything if derived else images
    if indexed is None:
        indexed = not state or matched >= INDEXED_FRACTION * everything \
            or engine.dialect.name != "sqlite"
    answers = _on_series(engine, state, where_all, workers) if indexed \
        else _on_matches(engine, state)
    out: dict[str, Any] = {"total": matched, "catalog": catalog, "derived": derived,
                           "derived_objects": everything - images, "facets": []}
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
