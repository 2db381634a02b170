"""The catalog's columnar copy (radflow.cohorts.columns) answers every cohort query exactly as
SQL does, on SQLite and on PostgreSQL, and is never used once the catalog has changed."""

from __future__ import annotations

import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ENGINES, new_database
from sqlalchemy import delete, func, insert, update
from sqlmodel import col, select

from radflow.catalog.db import get_engine, session_scope
from radflow.catalog.models import DerivedResult, Finding, Patient, Series, Study
from radflow.cohorts import CohortDefinition, columns, count_series, select_series, to_sql
from radflow.cohorts.definition import FIELDS, OPS

TEXT = {
    "manufacturer": ["SIEMENS", "Siemens Healthineers", "GE MEDICAL SYSTEMS", "Philips", "",
                     "MÜLLER Medical", "toshiba_50%"],
    "model": ["SOMATOM Force", "Revolution", "Ingenia 3.0T", "Aquilion"],
    "series_description": ["ABD PORTAL VENOUS", "Thorax 1.5 lung", "T1 MPRAGE", "PET WB",
                           "pelvis PORTAL", "ÄRM"],
    "protocol_name": ["Abdomen", "Head", "ROUTINE"],
    "contrast_agent": ["Omnipaque", "Visipaque", "Gadovist"],
}
CODES = {"modality": ["CT", "MR", "PT", "SEG", "SR"], "body_part": ["ABDOMEN", "CHEST", "HEAD"],
         "patient_sex": ["F", "M", "O"]}
NUMBERS = {"field_strength": [1.5, 3.0], "kvp": [100.0, 120.0], "slice_thickness": [0.625, 1.0, 1.5, 5.0],
           "pixel_spacing": [0.5, 0.7, 1.0], "slice_spacing": [1.0, 2.5], "rows": [256, 512],
           "columns": [256, 512], "age_years": [18.5, 40.0, 65.0, 80.25]}
FINDINGS = ["missing_slices", "missing_tag", "catalog_failed", "Odd_Code"]


def maybe(rng: random.Random, values: list[Any], none: float = 0.2) -> Any:
    return None if rng.random() < none else rng.choice(values)


def build(url: str, n: int, seed: int) -> None:
    rng = random.Random(seed)
    with session_scope(url) as session:
        session.execute(insert(Patient), [{"orthanc_id": "p", "patient_id": "P"}])
        session.execute(insert(Study), [{"orthanc_id": "st", "study_uid": "1", "patient_pk": 1}])
        rows = []
        for i in range(n):
            row = {"orthanc_id": f"s{i}", "series_uid": f"1.2.{i % (n - 5)}", "study_pk": 1,
                   "study_uid": "1", "num_instances": rng.randrange(0, 5),
                   "missing_slices": rng.randrange(0, 3), "contrast": rng.random() < 0.5,
                   "status": rng.choice(["ok", "warning", "error"]),
                   "study_date": maybe(rng, [date(2019, 12, 31) + timedelta(days=d)
                                             for d in (0, 1, 400, 1500)]),
                   "uniform_spacing": maybe(rng, [True, False]),
                   "geometry_consistent": maybe(rng, [True, False])}
            row |= {k: maybe(rng, v) for k, v in {**TEXT, **CODES, **NUMBERS}.items()}
            if row["modality"] in ("SEG", "SR") and rng.random() < 0.8:
                row["source_series_uid"] = f"1.2.{rng.randrange(n)}"
            rows.append(row)
        session.execute(insert(Series), rows)
        session.execute(insert(Finding), [
            {"series_pk": rng.randrange(1, n + 1), "code": rng.choice(FINDINGS), "severity": "warning",
             "message": "m"} for _ in range(n // 3)])
        session.execute(insert(DerivedResult), [  # has_result: current ones only
            {"key": f"k{i}", "kind": rng.choice(["SEG", "SR", "RTSTRUCT"]),
             "source_series_uid": f"1.2.{rng.randrange(n)}", "algorithm": "a", "version": "1",
             "status": rng.choice(["draft", "accepted", "rejected", "superseded"])}
            for i in range(n // 4)])


def value_of(rng: random.Random, field: str, op: str) -> Any:
    kind = FIELDS[field].kind
    if op == "exists":
        return rng.random() < 0.7
    pool: list[Any]
    if field == "finding":
        pool = [c.lower() for c in FINDINGS] + ["missing", "code", "nothing"]
    elif kind == "text":
        pool = [v for v in TEXT.get(field, ["ok", "warning", "error"])] + ["siemens", "portal", "ü", "%", "_"]
        pool = [v if op == "contains" else v.casefold() for v in pool]
        if op == "contains":
            pool = [v.casefold()[:rng.randrange(1, 5)] if v else v for v in pool]
    elif kind == "code":
        pool = CODES[field] + ["XX"]
    elif kind == "number":
        pool = [float(v) for v in NUMBERS.get(field, [0, 1, 2, 3])] + [0.0, 2.0, 70.0]
    elif kind == "date":
        pool = ["2019-12-31", "2020-01-01", "2021-02-04", "2024-02-08", "2030-01-01"]
    else:
        pool = [True, False]
    if op in ("in", "not_in"):
        return rng.sample(pool, min(len(pool), rng.randrange(1, 4)))
    if op == "between":
        return sorted(rng.sample(pool, 2))
    return rng.choice(pool)


def random_node(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    roll = rng.random()
    if depth < 3 and roll < 0.35:
        return {rng.choice(["all", "any"]): [random_node(rng, depth + 1)
                                             for _ in range(rng.randrange(2, 4))]}
    if depth < 3 and roll < 0.5:
        return {"not": random_node(rng, depth + 1)}
    if roll < 0.56:
        return {"has_result": rng.choice(["SEG", "SR", "RTSTRUCT"])}
    field = rng.choice(list(FIELDS))
    op = rng.choice(sorted(OPS[FIELDS[field].kind]))
    return {"field": field, "op": op, "value": value_of(rng, field, op)}


@pytest.fixture(params=ENGINES)
def catalog(request, tmp_path: Path, monkeypatch) -> str:
    monkeypatch.setenv("RADFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("RADFLOW_COLUMNS_FROM", "20000")
    url = new_database(request, request.param, tmp_path, "columns")
    build(url, 1500, seed=3)
    return url


def sql_answer(url: str, definition: CohortDefinition) -> tuple[int, list[int]]:
    where = to_sql(definition.where)
    with session_scope(url) as session:
        n = session.exec(select(func.count()).select_from(Series).where(where)).one()
        ids = session.exec(select(Series.id).where(where).order_by(
            col(Series.study_date), col(Series.id)).limit(100)).all()
    return n, list(ids)


def sql_page(url: str, definition: CohortDefinition, limit: int, offset: int) -> list[int]:
    with session_scope(url) as session:
        return list(session.exec(select(Series.id).where(to_sql(definition.where)).order_by(
            col(Series.study_date), col(Series.id)).offset(offset).limit(limit)).all())


def test_the_copy_answers_every_definition_as_sql_does(catalog: str) -> None:
    assert columns.refresh(catalog)["state"] == "small"  # under RADFLOW_COLUMNS_FROM: none kept
    built = columns.refresh(catalog, force=True)
    assert built["state"] == "built" and built["series"] == 1500
    assert columns.refresh(catalog)["state"] == "current"
    rng = random.Random(11)
    checked = nonempty = 0
    with session_scope(catalog) as session:
        copy = columns.current(session.connection())
        assert copy is not None and copy.size == 1500
        for _ in range(400):
            definition = CohortDefinition.parse({"where": random_node(rng)})
            n, ids = sql_answer(catalog, definition)
            assert count_series(session, definition) == n, definition.where
            assert [s.id for s in select_series(session, definition, limit=100)] == ids, \
                definition.where
            page = select_series(session, definition, limit=7, offset=20)
            assert [s.id for s in page] == sql_page(catalog, definition, 7, 20)
            checked += 1
            nonempty += 0 < n < 1500
    assert checked == 400 and nonempty > 150  # most definitions split the catalog


def test_a_changed_catalog_is_answered_in_sql_until_refreshed(catalog: str) -> None:
    columns.refresh(catalog, force=True)
    ct = CohortDefinition.parse({"where": {"field": "modality", "op": "eq", "value": "CT"}})
    odd = CohortDefinition.parse({"where": {"field": "finding", "op": "eq", "value": "odd_code"}})
    before = sql_answer(catalog, ct)[0]
    changes = [
        lambda s: s.execute(update(Series).where(col(Series.id) == 7).values(modality="CT")),
        lambda s: s.execute(insert(Series), [{"orthanc_id": "new", "series_uid": "9", "study_pk": 1,
                                              "study_uid": "1", "modality": "CT"}]),
        lambda s: s.execute(insert(Finding), [{"series_pk": 3, "code": "Odd_Code",
                                               "severity": "warning", "message": "m"}]),
        lambda s: s.execute(delete(Finding).where(col(Finding.code) == "Odd_Code")),
        lambda s: s.execute(delete(Series).where(col(Series.orthanc_id) == "new")),
    ]
    for change in changes:
        with session_scope(catalog) as session:
            change(session)
            assert columns.current(session.connection()) is None  # its own uncommitted change
        with session_scope(catalog) as session:
            assert columns.current(session.connection()) is None
            assert count_series(session, ct) == sql_answer(catalog, ct)[0]
            assert count_series(session, odd) == sql_answer(catalog, odd)[0]
        assert columns.refresh(catalog)["state"] == "small"  # 1,500 series: below the threshold
        assert columns.refresh(catalog, force=True)["state"] == "built"
        with session_scope(catalog) as session:
            assert columns.current(session.connection()) is not None
            assert count_series(session, ct) == sql_answer(catalog, ct)[0]
            assert count_series(session, odd) == sql_answer(catalog, odd)[0]
    assert sql_answer(catalog, ct)[0] in (before, before + 1)


def test_the_threshold_comes_from_the_environment(catalog: str, monkeypatch) -> None:
    folder = columns.folder_for(get_engine(catalog))
    monkeypatch.setenv("RADFLOW_COLUMNS_FROM", "1000")
    assert columns.refresh(catalog)["state"] == "built"
    assert (folder / "current.json").is_file()
    assert folder.stat().st_mode & 0o777 == 0o700  # patients' ages and dates: owner only
    monkeypatch.setenv("RADFLOW_COLUMNS_FROM", "2000")
    with session_scope(catalog) as session:
        session.execute(update(Series).where(col(Series.id) == 1).values(kvp=99.0))
    assert columns.refresh(catalog)["state"] == "small" and not folder.exists()
    with session_scope(catalog) as session:
        assert columns.current(session.connection()) is None
