"""The catalog dashboard's facets on a real SQLite catalog: counts per bucket against the same
counts made in Python from the rows, the exclusion of a facet's own filter, the filter state as
a cohort definition, and the indexes the facet queries read."""

from __future__ import annotations

import random
from collections import Counter
from datetime import date, timedelta

import pytest
from conftest import ENGINES, new_database, one_study_catalog
from sqlalchemy import insert, text
from sqlmodel import select

from radflow.catalog.db import get_engine, session_scope
from radflow.catalog.models import Finding, Series
from radflow.cohorts import CohortDefinition, count_series, parse_short
from radflow.cohorts.images import IMAGE_SERIES, images_only, is_image_series
from radflow.enums import Severity
from radflow.errors import ConfigurationError
from radflow.explore.facets import definition_of, facet_counts, parse_state, where_of

N = 3000


@pytest.fixture(scope="module", params=ENGINES)
def catalog(request, tmp_path_factory) -> tuple[str, list[dict]]:
    url = new_database(request, request.param, tmp_path_factory.mktemp("facets"), "facets")
    study_pk = one_study_catalog(url)
    rng = random.Random(11)
    rows = []
    for i in range(N):
        modality = rng.choice(["CT", "CT", "MR", "SEG"])
        rows.append({
            "orthanc_id": f"s{i}", "series_uid": f"1.2.{i}", "study_pk": study_pk,
            "study_uid": "1", "modality": modality,
            "body_part": rng.choice(["ABDOMEN", "CHEST", None]),
            "manufacturer": rng.choice(["SIEMENS", "Philips", "GE MEDICAL SYSTEMS", None]),
            "slice_thickness": rng.choice([0.625, 1.0, 2.5, 3.0, 5.0, None]),
            "kvp": rng.choice([100.0, 120.0]) if modality == "CT" else None,
            "study_date": date(2015, 1, 1) + timedelta(days=rng.randrange(8 * 365)),
            "patient_sex": rng.choice(["F", "M", None]),
            "age_years": rng.choice([None, rng.uniform(18, 95)]),
        })
    with session_scope(url) as session:
        session.execute(insert(Series), rows)
        ids = {r.orthanc_id: r.id for r in session.exec(select(Series))}
        for i in range(0, N, 7):
            session.add(Finding(series_pk=ids[f"s{i}"], code="missing_slices",
                                severity=Severity.WARNING, message="gap"))
            rows[i]["finding"] = "missing_slices"
    return url, rows


def bucket(facet: str, row: dict) -> str | None:
    """The bucket of one row, computed in Python (the reference for the SQL)."""
    value = {"age": row["age_years"], "study_year": row["study_date"],
             "slice_thickness": row["slice_thickness"]}.get(facet, row.get(facet))
    if value is None:
        return None
    if facet == "age":
        return str(int(value // 10 * 10))
    if facet == "study_year":
        return str(value.year)
    if facet == "slice_thickness":
        return f"{max(e for e in (0.0, 1.0, 2.0, 3.0, 5.0) if value >= e):g}"
    if facet == "kvp":
        return f"{value:g}"
    return str(value)


def matches(row: dict, state: dict[str, list[str]], without: str | None = None,
            images: bool = False) -> bool:
    """The reference: every facet's choice holds (``without`` one), and the row is an image
    series unless the state shows derived objects (or ``images``: a scanner facet's count)."""
    if (images or "derived" not in state) and row["modality"] == "SEG":
        return False
    return all(bucket(k, row) in v for k, v in state.items() if k not in (without, "derived"))


@pytest.mark.parametrize("indexed", [True, False], ids=["per-facet", "one-pass"])
@pytest.mark.parametrize("state", [
    {}, {"modality": ["CT"]}, {"modality": ["CT", "MR"], "age": ["60"]},
    {"slice_thickness": ["1"], "study_year": ["2019", "2020"], "patient_sex": ["F"]},
    {"finding": ["missing_slices"], "manufacturer": ["Philips"]},
    {"derived": ["1"]},
    {"derived": ["1"], "modality": ["CT", "SEG"], "manufacturer": ["GE MEDICAL SYSTEMS"]},
])
def test_facet_counts_match_the_rows(catalog, state, indexed) -> None:
    url, rows = catalog
    counts = facet_counts(url, parse_state(state), indexed=indexed)
    derived = sum(r["modality"] == "SEG" for r in rows)
    assert counts["catalog"] == (N if "derived" in state else N - derived) and derived > 0
    assert counts["derived_objects"] == derived and counts["derived"] == ("derived" in state)
    assert counts["total"] == sum(matches(r, state) for r in rows)
    by_key = {f["key"]: f for f in counts["facets"]}
    if "derived" not in state:  # image series only: no SEG bar
        assert "SEG" not in {b["key"] for b in by_key["modality"]["buckets"]}
    for facet in ("modality", "body_part", "manufacturer", "kvp", "slice_thickness",
                  "study_year", "age", "patient_sex", "finding"):
        # each facet counts over the rows that match every *other* facet's filter; the
        # scanner facet over image series only, whatever the switch
        expected = Counter(bucket(facet, r) for r in rows if matches(
            r, state, without=facet, images=facet == "manufacturer"))
        expected.pop(None, None)
        got = {b["key"]: b["count"] for b in by_key[facet]["buckets"] if b["count"]}
        assert got == dict(expected), facet
        if facet == "study_year" and got:  # a histogram over time: the empty years are shown
            years = [int(b["key"]) for b in by_key[facet]["buckets"]]
            assert years == list(range(min(map(int, got)), max(map(int, got)) + 1))
        assert {b["key"] for b in by_key[facet]["buckets"] if b["chosen"]} == \
            set(state.get(facet, ())) & set(got)
    # the state is a cohort definition that selects the same series
    definition = definition_of(parse_state(state))
    if definition is not None:
        with session_scope(url) as session:
            assert count_series(session, definition) == counts["total"]


def test_a_dashboard_view_is_the_cli_cohort() -> None:
    state = parse_state({"modality": ["CT"], "age": ["60"], "nonsense": ["x"], "derived": ["1"]})
    assert state == {"age": ["60"], "derived": ["1"], "modality": ["CT"]}  # unknown ignored
    cli = parse_short(["modality=CT", "age_years>=60", "age_years<70"])
    assert definition_of(state).content_hash == cli.content_hash  # bins join the conditions
    assert where_of(state, without="age") == {"field": "modality", "op": "eq", "value": "CT"}
    assert definition_of({"derived": ["1"]}) is None
    # without the switch, the view keeps to image series: the CLI's filters and the rule
    images = CohortDefinition.parse({"where": images_only(cli.where)})
    del state["derived"]
    assert definition_of(state).content_hash == images.content_hash
    assert definition_of({}).where == IMAGE_SERIES
    assert where_of(state, without="age") == images_only(
        {"field": "modality", "op": "eq", "value": "CT"})


def test_several_values_of_one_facet_are_one_condition() -> None:
    def where(query: dict) -> dict:
        return where_of(parse_state({**query, "derived": ["1"]}))

    assert where({"modality": ["CT", "MR"]}) == {"field": "modality", "op": "in",
                                                 "value": ["CT", "MR"]}
    assert where({"kvp": ["120", "100"]}) == {"field": "kvp", "op": "in", "value": [100.0, 120.0]}
    # adjacent bins are one range, bins apart stay alternatives
    assert where({"age": ["70", "60"]}) == {"all": [
        {"field": "age_years", "op": "gte", "value": 60.0},
        {"field": "age_years", "op": "lt", "value": 80.0}]}
    assert where({"study_year": ["2019", "2020"]}) == {
        "field": "study_date", "op": "between", "value": ["2019-01-01", "2020-12-31"]}
    assert where({"slice_thickness": ["3", "1"]}) == {"any": [
        {"all": [{"field": "slice_thickness", "op": "gte", "value": 1.0},
                 {"field": "slice_thickness", "op": "lt", "value": 2.0}]},
        {"all": [{"field": "slice_thickness", "op": "gte", "value": 3.0},
                 {"field": "slice_thickness", "op": "lt", "value": 5.0}]}]}
    assert where({"slice_thickness": ["3", "5"]}) == {"field": "slice_thickness", "op": "gte",
                                                      "value": 3.0}  # the last bin is open
    # the image rule joins the facets' conditions in one flat list (one row each)
    flat = where_of(parse_state({"modality": ["CT", "MR"], "patient_sex": ["F"]}))
    assert all("field" in c for c in flat["all"]) and len(flat["all"]) == 4


def test_the_image_series_rule() -> None:
    assert is_image_series("CT", "SIEMENS") and is_image_series(None, None)
    assert not is_image_series("SEG", "SIEMENS") and not is_image_series("sr", None)
    assert not is_image_series("OT", "radflow") and not is_image_series("RTSTRUCT", "Slicer")
    assert images_only(IMAGE_SERIES) == IMAGE_SERIES
    with pytest.raises(ConfigurationError, match="age='old'"):
        parse_state({"age": ["old"]})


def test_finding_field(catalog) -> None:
    url, rows = catalog
    with session_scope(url) as session:
        def count(where: dict) -> int:
            return count_series(session, CohortDefinition.parse({"where": where}))
        flagged = sum("finding" in r for r in rows)
        assert count({"field": "finding", "op": "eq", "value": "MISSING_SLICES"}) == flagged
        assert count({"field": "finding", "op": "ne", "value": "missing_slices"}) == N - flagged
        assert count({"field": "finding", "op": "exists", "value": False}) == N - flagged
        assert count({"field": "finding", "op": "in", "value": ["bad_value"]}) == 0
        assert count({"field": "finding", "op": "contains", "value": "slices"}) == flagged


def test_facets_read_their_indexes(catalog) -> None:
    from radflow.catalog.models.mirror import BUCKETS, bucket_expression

    url, _ = catalog
    with get_engine(url).connect() as connection:
        dialect = connection.dialect.name
        if dialect == "postgresql":
            # A small table is scanned, and another index holding study_date is as cheap as the
            # facet's own for study_year (seen in CI): inside a transaction that is rolled back,
            # only the facet indexes and the constraints' remain, so the plan shows whether the
            # facet's index matches its expression.
            connection.execute(text("SET LOCAL enable_seqscan = off"))
            connection.execute(text("SET LOCAL enable_bitmapscan = off"))
            others = connection.execute(text(
                "SELECT indexname FROM pg_indexes WHERE tablename = 'series' AND indexname NOT "
                "LIKE 'ix_series_facet_%' AND indexdef NOT LIKE 'CREATE UNIQUE%'")).scalars()
            for name in list(others):
                connection.execute(text(f'DROP INDEX "{name}"'))
        for key in BUCKETS:
            sql = bucket_expression(key, dialect)
            explain = "EXPLAIN QUERY PLAN" if dialect == "sqlite" else "EXPLAIN"
            plan = " ".join(str(r[-1]) for r in connection.execute(
                text(f"{explain} SELECT {sql}, count(*) FROM series GROUP BY {sql}")))
            assert f"ix_series_facet_{key}" in plan, (key, plan)
            assert "TEMP B-TREE" not in plan, (key, plan)  # no sort of the series table
        connection.rollback()
