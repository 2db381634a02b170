"""The catalog's columnar copy (radflow.cohorts.columns) answers every cohort query exactly as
SQL does, on SQLite and on PostgreSQL, and is never used once the catalog has changed."""

from __future__ import annotations

import fcntl
import random
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import ENGINES, new_database
from sqlalchemy import delete, func, insert, text, update
from sqlmodel import col, select

from radflow.catalog.db import get_engine, session_scope
from radflow.catalog.models import DerivedResult, FeatureValue, Finding, Patient, Series, Study
from radflow.cohorts import (
    CohortDefinition,
    columns,
    count_series,
    result_kinds,
    select_series,
    to_sql,
)
from radflow.cohorts.definition import FIELDS, OPS
from radflow.enums import ResultKind
from radflow.results import store
from radflow.results.keys import ResultKey
from radflow.types import FeatureTable, SeriesRef

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
KINDS = [kind.value for kind in ResultKind]


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
        add_results(session, n, rng, n // 4)


STATUSES = ["draft", "accepted", "rejected", "superseded", "corrected"]


def add_results(session: Any, n: int, rng: random.Random, rounds: int) -> None:
    """Results of every status on random series, as the pipeline and reviews leave them: SEGs
    of two models, the correction of each corrected one, recomputations by force of superseded
    ones, SRs (with feature segments) of SEGs whatever their status (a rejected SEG's too),
    tables made from SRs, and results of other kinds."""
    rows: list[dict[str, Any]] = []
    features: list[dict[str, Any]] = []

    def add(**row: Any) -> int:
        rows.append({"id": len(rows) + 1, "key": f"k{len(rows) + 1}", "version": "1",
                     "parent_id": None, "derived_from_id": None, **row})
        return len(rows)

    def segments(result: int, uid: str, chance: float) -> None:
        if rng.random() < chance:
            for number, label in enumerate(rng.sample(["liver", "spleen"], rng.randrange(1, 3))):
                features.append({"result_pk": result, "source_series_uid": uid,
                                 "segment_number": number + 1, "segment_label": label,
                                 "feature": "volume", "value": 1.0, "unit": "mm3"})

    for _ in range(rounds):
        uid, place = f"1.2.{rng.randrange(n)}", f"s{rng.randrange(n)}"
        algorithm, status = rng.choice(["a", "b"]), rng.choice(STATUSES)
        segs = [add(kind="SEG", source_series_uid=uid, source_orthanc_id=place,
                    algorithm=algorithm, status=status)]
        if status == "corrected":  # the clinician's correction
            segs.append(add(kind="SEG", source_series_uid=uid, algorithm="correction",
                            parent_id=segs[0], status=rng.choice(["draft", "accepted", "rejected"])))
        elif status == "superseded" and rng.random() < 0.6:  # recomputed by force
            segs.append(add(kind="SEG", source_series_uid=uid, algorithm=algorithm,
                            parent_id=segs[0], status=rng.choice(["draft", "accepted"])))
        segments(segs[-1], uid, 0.1)
        for _ in range(rng.choice([0, 1, 1, 2])):  # SRs of any of them, a rejected SEG's too
            sr = add(kind="SR", source_series_uid=uid, algorithm="pyradiomics",
                     derived_from_id=rng.choice(segs),
                     status=rng.choice(["draft", "draft", "accepted", "rejected", "superseded"]))
            segments(sr, uid, 0.7)
            if rng.random() < 0.3:
                add(kind="FEATURES", source_series_uid=uid, algorithm="table", derived_from_id=sr,
                    status=rng.choice(["draft", "accepted", "superseded"]))
        if rng.random() < 0.2:
            add(kind=rng.choice(["RTSTRUCT", "OT"]), source_series_uid=f"1.2.{rng.randrange(n)}",
                algorithm="c", status=rng.choice(STATUSES[:4]))
    session.execute(insert(DerivedResult), rows)
    session.execute(insert(FeatureValue), features)
    if session.get_bind().dialect.name == "postgresql":  # ids given: move the sequence on
        session.execute(text("SELECT setval(pg_get_serial_sequence('result', 'id'), "
                             "(SELECT max(id) FROM result))"))


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
        return {"has_result": rng.choice(KINDS)}
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
    with session_scope(catalog) as session:  # has_result: from the copy's own part, as SQL
        copy = columns.current(session.connection())
        assert copy is not None and columns.result_masks(session.connection(), copy) is not None
        counts = assert_has_result_as_sql(catalog, session)
    assert counts["SEG"] > 100 and counts["SR"] > 50 and counts["FEATURES"] > 10, counts


def kind_definitions(kind: str) -> list[CohortDefinition]:
    return [CohortDefinition.parse({"where": where}) for where in (
        {"has_result": kind}, {"not": {"has_result": kind}},
        {"all": [{"field": "modality", "op": "eq", "value": "CT"}, {"has_result": kind}]},
        {"any": [{"has_result": kind}, {"has_result": "SEG"}]})]


def assert_has_result_as_sql(url: str, session: Any) -> dict[str, int]:
    """Every kind's has_result conditions answered as SQL answers them; the counts per kind."""
    counts = {}
    for kind in KINDS:
        for definition in kind_definitions(kind):
            n, ids = sql_answer(url, definition)
            assert count_series(session, definition) == n, definition.where
            assert [s.id for s in select_series(session, definition, limit=100)] == ids
        counts[kind] = sql_answer(url, kind_definitions(kind)[0])[0]
    return counts


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


PROBE = ("SEG", "SR", "FEATURES")


def probe(session: Any) -> tuple[int, ...]:
    """Whether the probe series (manufacturer "Radflow Probe") has a current SEG, SR, table."""
    return tuple(count_series(session, CohortDefinition.parse({"where": {"all": [
        {"field": "manufacturer", "op": "eq", "value": "radflow probe"}, {"has_result": kind}]}}))
        for kind in PROBE)


def record(session: Any, kind: str, inputs: tuple[str, ...], algorithm: str,
           **kwargs: Any) -> DerivedResult:
    return store.record(session, ResultKey(ResultKind(kind), inputs, algorithm, "1"),
                        SeriesRef("probe", "9.9.9"), orthanc_id=None, sop_instance_uid=None,
                        series_uid=None, **kwargs)


def add_probe(url: str) -> int:
    """The probe series, with a draft SEG and a draft SR of it; the SEG's id."""
    with session_scope(url) as session:
        session.execute(insert(Series), [{"orthanc_id": "probe", "series_uid": "9.9.9",
                                          "study_pk": 1, "study_uid": "1", "modality": "CT",
                                          "manufacturer": "Radflow Probe"}])
        seg = record(session, "SEG", ("9.9.9",), "model").id
        record(session, "SR", ("9.9.9", "seg"), "pyradiomics", derived_from_id=seg)
    return seg


def test_a_result_change_makes_has_result_stale_until_refreshed(catalog: str) -> None:
    """Review decisions, a correction, a recomputation by force, new results, changed feature
    rows and deleting a series' results each make the copy's has_result part stale while its
    series' arrays stay current: has_result is then read from the catalog (in the changing
    transaction, and while another process rebuilds the part) until the part is made again, by
    refresh or by the next has_result query; then it answers as SQL does."""
    seg = add_probe(catalog)
    built = columns.refresh(catalog, force=True)
    assert built["state"] == "built"
    made: dict[str, int] = {}

    def correct(s: Any) -> None:  # a clinician's correction (draft) of the SEG
        made["fix"] = record(s, "SEG", ("9.9.9", "fix"), "correction").id
        store.set_status(s, seg, "corrected", by="dr", correction_id=made["fix"])

    def force(s: Any) -> None:  # recomputed by force: the SEG (and its SR) superseded
        key = ResultKey(ResultKind.SEG, ("9.9.9",), "model", "1").next_generation()
        made["again"] = store.record(s, key, SeriesRef("probe", "9.9.9"), orthanc_id=None,
                                     sop_instance_uid=None, series_uid=None, recomputes=seg).id

    def quantify(s: Any) -> None:  # two SRs of it (liver; none), a table of the first
        sr = record(s, "SR", ("9.9.9", "a"), "pyradiomics", derived_from_id=made["again"])
        store.replace_features(s, sr, FeatureTable([{
            "source_series_uid": "9.9.9", "segment_number": 1, "segment_label": "liver",
            "feature": "volume", "value": 1.0, "unit": "mm3"}]))
        record(s, "SR", ("9.9.9", "b"), "pyradiomics", derived_from_id=made["again"])
        record(s, "FEATURES", ("9.9.9", "t"), "table", derived_from_id=sr.id)
        made["sr"] = sr.id

    changes = [  # (change, probe's current SEG, SR, table afterwards)
        (lambda s: store.set_status(s, seg, "rejected", by="dr"), (0, 0, 0)),
        (lambda s: store.set_status(s, seg, "accepted", by="dr"), (1, 1, 0)),
        (correct, (1, 0, 0)),  # the SR of a corrected SEG is not current
        (lambda s: store.set_status(s, made["fix"], "rejected", by="dr"), (0, 0, 0)),
        (force, (1, 0, 0)),
        (quantify, (1, 1, 1)),
        # its liver rows gone, the first SR is outranked by the second: its table is not current
        (lambda s: store.replace_features(s, store.get(s, made["sr"]), FeatureTable()),
         (1, 1, 0)),
        (lambda s: store.delete_for_series(s, "probe"), (0, 0, 0)),
    ]
    with session_scope(catalog) as session:
        assert probe(session) == (1, 1, 0)
    with session_scope(catalog) as session:  # what the rule does not read changes nothing
        session.execute(update(DerivedResult).values(detail="{}", orthanc_id="o"))
        session.execute(update(FeatureValue).values(value=2.0))
    with session_scope(catalog) as session:
        connection = session.connection()
        copy = columns.current(connection)
        assert copy is not None
        assert copy.result_bits(result_kinds.results_generation(connection)) is not None
    folder = columns.folder_for(get_engine(catalog))
    for number, (change, expected) in enumerate(changes):
        with session_scope(catalog) as session:
            change(session)
            connection = session.connection()
            copy = columns.current(connection)
            assert copy is not None and copy.generation == built["generation"]  # series: current
            assert columns.result_masks(connection, copy) is None  # its own uncommitted results
            assert probe(session) == expected, number
        with session_scope(catalog) as session, open(folder / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process is making the part again
            connection = session.connection()
            copy = columns.current(connection)
            assert copy is not None
            assert copy.result_bits(result_kinds.results_generation(connection)) is None
            assert columns.result_masks(connection, copy) is None
            assert probe(session) == expected, number  # from the catalog
        if number % 2:
            assert columns.refresh(catalog)["state"] == "results"
        with session_scope(catalog) as session:  # else made again by this has_result query
            assert probe(session) == expected, number
            connection = session.connection()
            copy = columns.current(connection)
            assert copy is not None and copy.generation == built["generation"]
            assert copy.result_bits(result_kinds.results_generation(connection)) is not None
            assert_has_result_as_sql(catalog, session)
        assert columns.refresh(catalog)["state"] == "current"
    assert len(list(folder.glob("*/results-*.npy"))) == 1  # the older parts are gone


def test_results_committed_while_the_part_is_made_again_are_not_in_it(catalog: str,
                                                                       monkeypatch) -> None:
    """The has_result part is read from one state of the catalog and labelled with that state's
    results generation: a review committed during the read is not in it, and a query that sees
    the review does not use it."""
    seg = add_probe(catalog)
    columns.refresh(catalog, force=True)
    with session_scope(catalog) as session:  # the part is stale
        record(session, "RTSTRUCT", ("9.9.9",), "contours")
    read = result_kinds.read

    def read_during_a_review(connection: Any, ids: Any) -> Any:
        with session_scope(catalog) as other:  # another process, meanwhile
            store.set_status(other, seg, "rejected", by="dr")
        return read(connection, ids)

    monkeypatch.setattr(result_kinds, "read", read_during_a_review)
    made = columns.refresh(catalog)
    monkeypatch.setattr(result_kinds, "read", read)
    assert made["state"] == "results"
    with session_scope(catalog) as session:
        connection = session.connection()
        copy = columns.current(connection)
        assert copy is not None
        now = result_kinds.results_generation(connection)
        assert now is not None and now > made["results_generation"]
        assert copy.result_bits(now) is None  # made before the review: not for this query
        held = copy.result_bits(made["results_generation"])
        assert held is not None
        probe_id = session.exec(select(Series.id).where(Series.orthanc_id == "probe")).one()
        at = copy.mask_of([probe_id])
        assert result_kinds.mask(held[1], held[0], "SEG")[at].all()  # as it was then
        assert result_kinds.mask(held[1], held[0], "RTSTRUCT")[at].all()
        assert probe(session) == (0, 0, 0)  # the review seen: the part made again
        assert copy.result_bits(now) is not None
        assert_has_result_as_sql(catalog, session)


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
