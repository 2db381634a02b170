"""The one rule of which result is current (radflow.results.current): over plain rows for every
status combination, the same answer from its SQL on SQLite and PostgreSQL (random catalogs),
and every consumer (the feature export, Explore's series page and lists, federated site data,
has_result) agreeing after a correction."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import ENGINES, new_database, one_study_catalog
from sqlalchemy import insert
from sqlmodel import col, select
from starlette.requests import Request

from radflow.catalog.db import session_scope
from radflow.catalog.models import DerivedResult, FeatureValue, Series, Study
from radflow.enums import ResultStatus
from radflow.results import current as rule

STATUSES = [s.value for s in ResultStatus]


@dataclass
class Row:
    id: int
    status: str
    kind: str = "SEG"
    algorithm: str = "model"
    parent_id: int | None = None
    derived_from_id: int | None = None
    source_series_uid: str = "1.2.3"


def winners(rows: list[Row], segments: dict[int, list[str]] | None = None) -> dict:
    return {group: row.id for group, row in rule.current(rows, segments).items()}


@pytest.mark.parametrize("status", STATUSES)
def test_a_lone_result_is_current_when_draft_or_accepted(status: str) -> None:
    found = winners([Row(1, status)])
    assert found == ({("1.2.3", "SEG", "model", None): 1}
                     if status in ("draft", "accepted") else {})


@pytest.mark.parametrize("older,newer", list(itertools.product(STATUSES, STATUSES)))
def test_two_results_of_one_group(older: str, newer: str) -> None:
    """Accepted before draft, the newest among equals; rejected, superseded and corrected (with
    no correction) never."""
    eligible = [(s, i) for i, s in ((1, older), (2, newer)) if s in ("draft", "accepted")]
    expected = min(eligible, key=lambda e: (e[0] != "accepted", -e[1]))[1] if eligible else None
    found = winners([Row(1, older), Row(2, newer)])
    assert found.get(("1.2.3", "SEG", "model", None)) == expected


@pytest.mark.parametrize("correction", STATUSES)
def test_a_correction_is_the_current_result_of_the_models_line(correction: str) -> None:
    """The model's SEG (corrected), its SR, the clinician's correction and its SR, and a newer
    accepted SEG of the same model: the correction wins (corrected, then accepted, then draft)
    while it is draft or accepted, and the SR that is current is the one of the current SEG."""
    rows = [Row(1, "corrected"), Row(2, "draft", "SR", "pyradiomics", derived_from_id=1),
            Row(3, correction, algorithm="correction", parent_id=1),
            Row(4, "draft", "SR", "pyradiomics", derived_from_id=3),
            Row(5, "accepted")]
    segments = {2: ["liver", "spleen"], 4: ["liver", "spleen"], 6: ["liver"]}
    rows.append(Row(6, "draft", "SR", "pyradiomics", derived_from_id=5))
    found = winners(rows, segments)
    seg = found[("1.2.3", "SEG", "model", None)]
    if correction in ("draft", "accepted"):
        assert seg == 3
        assert found[("1.2.3", "SR", "pyradiomics", "liver")] == 4
        assert found[("1.2.3", "SR", "pyradiomics", "spleen")] == 4
    else:  # the correction was rejected, superseded or corrected without a correction
        assert seg == 5
        assert found[("1.2.3", "SR", "pyradiomics", "liver")] == 6
        assert ("1.2.3", "SR", "pyradiomics", "spleen") not in found  # the SR of 1 never
    assert 1 not in found.values() and 2 not in found.values()


def test_results_made_from_one_follow_it() -> None:
    """The SR of a rejected SEG is never current, even when it is the only SR; two models' SEGs
    are two lines, their SRs one group per segment (the newest of each segment)."""
    assert winners([Row(1, "rejected"), Row(2, "accepted", "SR", "pyradiomics",
                                             derived_from_id=1)]) == {}
    rows = [Row(1, "draft", algorithm="liver-model"), Row(2, "draft", algorithm="kidney-model"),
            Row(3, "draft", "SR", "pyradiomics", derived_from_id=1),
            Row(4, "draft", "SR", "pyradiomics", derived_from_id=2)]
    found = winners(rows, {3: ["liver", "kidney"], 4: ["kidney"]})
    assert found == {("1.2.3", "SEG", "liver-model", None): 1,
                     ("1.2.3", "SEG", "kidney-model", None): 2,
                     ("1.2.3", "SR", "pyradiomics", "liver"): 3,
                     ("1.2.3", "SR", "pyradiomics", "kidney"): 4}
    assert rule.current_ids(rows, {3: ["liver", "kidney"], 4: ["kidney"]}) == {1, 2, 3, 4}


def test_a_forced_recomputation_is_a_draft_of_the_same_line() -> None:
    rows = [Row(1, "superseded"), Row(2, "draft", parent_id=1), Row(3, "draft", algorithm="m2")]
    assert winners(rows) == {("1.2.3", "SEG", "model", None): 2,
                             ("1.2.3", "SEG", "m2", None): 3}
    assert rule.rank_of(rows[1], {r.id: r for r in rows}) == (rule.DRAFT, -2)


# -- the SQL form agrees with the rows' -----------------------------------------------------


def random_catalog(rng: random.Random, series: int = 6) -> tuple[list[Row], dict[int, list[str]]]:
    """Results of a few series: SEGs of two models, corrections and forced recomputations of
    them (parent_id), SRs of SEGs with random segments, tables made from SRs; every status."""
    rows: list[Row] = []
    segments: dict[int, list[str]] = {}

    def add(**kw) -> Row:
        row = Row(len(rows) + 1, rng.choice(STATUSES), **kw)
        rows.append(row)
        return row

    for k in range(series):
        uid = f"1.{k}"
        segs = [add(algorithm=rng.choice(["m1", "m2"]), source_series_uid=uid)
                for _ in range(rng.randrange(1, 4))]
        for _ in range(rng.randrange(0, 3)):  # corrections, and corrections of those
            parent = rng.choice(segs)
            segs.append(add(algorithm=rng.choice(["correction", parent.algorithm]),
                            parent_id=parent.id, source_series_uid=uid))
        for _ in range(rng.randrange(0, 4)):
            sr = add(kind="SR", algorithm="pyradiomics", derived_from_id=rng.choice(segs).id,
                     source_series_uid=uid)
            segments[sr.id] = rng.sample(["liver", "spleen", "kidney"], rng.randrange(0, 3))
            if rng.random() < 0.3:
                add(kind="FEATURES", algorithm="summary", derived_from_id=sr.id,
                    source_series_uid=uid)
    return rows, segments


def store_rows(url: str, rows: list[Row], segments: dict[int, list[str]]) -> None:
    with session_scope(url) as session:
        session.execute(insert(DerivedResult), [
            {"id": r.id, "key": f"k{r.id}", "kind": r.kind,
             "source_series_uid": r.source_series_uid, "algorithm": r.algorithm, "version": "1",
             "status": r.status, "parent_id": r.parent_id, "derived_from_id": r.derived_from_id}
            for r in rows])
        series_of = {r.id: r.source_series_uid for r in rows}
        features = [{"result_pk": pk, "source_series_uid": series_of[pk], "segment_number": n,
                     "segment_label": label, "feature": f, "value": 1.0, "unit": "1"}
                    for pk, labels in segments.items() for n, label in enumerate(labels)
                    for f in ("a", "b")]
        if features:
            session.execute(insert(FeatureValue), features)


@pytest.fixture(params=ENGINES)
def empty_catalog(request, tmp_path: Path) -> str:
    url = new_database(request, request.param, tmp_path, "current")
    one_study_catalog(url)
    return url


def test_the_sql_gives_what_the_rows_give(empty_catalog: str) -> None:
    rng = random.Random(5)
    rows, segments = random_catalog(rng, series=40)
    store_rows(empty_catalog, rows, segments)
    by_series: dict[str, list[Row]] = {}
    for r in rows:
        by_series.setdefault(r.source_series_uid, []).append(r)
    expected = {(row.id, group[3]) for group, row in rule.current(rows, segments).items()}
    assert len({i for i, _ in expected}) > 40  # the catalog has many current results...
    assert len(expected) < len(rows)  # ...and many that are not
    with session_scope(empty_catalog) as session:
        units = rule.current_units()
        assert set(session.exec(select(units.c.id, units.c.segment)).all()) == expected
        some = sorted(by_series)[::3]  # limited to some series
        series_of = {r.id: r.source_series_uid for r in rows}
        expected_some = {(i, s) for i, s in expected if series_of[i] in some}
        units = rule.current_units(some)
        assert set(session.exec(select(units.c.id, units.c.segment)).all()) == expected_some
        chosen = select(DerivedResult.source_series_uid).where(  # as a SELECT (Explore's)
            col(DerivedResult.source_series_uid).in_(some))
        units = rule.current_units(chosen)
        assert set(session.exec(select(units.c.id, units.c.segment)).all()) == expected_some
        ids = {i for i, _ in expected}
        assert set(session.exec(rule.current_result_ids()).all()) == ids
        for kind in ("SEG", "SR", "FEATURES"):
            assert set(session.exec(rule.series_with_current(kind)).all()) == {
                r.source_series_uid for r in rows if r.kind == kind and r.id in ids}


# -- every consumer agrees after a correction -----------------------------------------------


def corrected_case(url: str) -> dict[str, int]:
    """Series 1.2.3: the model's SEG and its SR (draft), then a clinician's correction
    (accepted) and its SR, as the pipeline and the review step record them."""
    from radflow.enums import ResultKind
    from radflow.results import ResultKey, store
    from radflow.types import FeatureTable, SeriesRef

    source = SeriesRef("ct", "1.2.3")

    def table(value: float) -> FeatureTable:
        return FeatureTable([{"source_series_uid": "1.2.3", "segment_number": n,
                              "segment_label": label, "feature": "original_shape_VoxelVolume",
                              "code": "IBSI:YEKZ", "value": value + n, "unit": "mm3"}
                             for n, label in ((1, "liver"), (2, "spleen"))])

    with session_scope(url) as session:
        study = session.exec(select(Study.id)).one()
        session.add(Series(orthanc_id="ct", series_uid="1.2.3", study_pk=study, study_uid="1",
                           modality="CT"))
        for uid in ("9.1", "9.3"):
            session.add(Series(orthanc_id=f"seg-{uid}", series_uid=uid, study_pk=study,
                               study_uid="1", modality="SEG", source_series_uid="1.2.3"))
        seg = store.record(session, ResultKey(ResultKind.SEG, ("1.2.3",), "model", "1"), source,
                           orthanc_id="a", sop_instance_uid="9.1.1", series_uid="9.1")
        sr = store.record(session, ResultKey(ResultKind.SR, ("1.2.3", "9.1.1"), "pyradiomics",
                                             "3"), source, orthanc_id="b",
                          sop_instance_uid="9.2.1", series_uid="9.2", derived_from_id=seg.id)
        store.replace_features(session, sr, table(100.0))
        fix = store.record(session, ResultKey(ResultKind.SEG, ("1.2.3", "9.1.1", "9.3.1"),
                                              "correction", "1", "dr"), source, orthanc_id="c",
                           sop_instance_uid="9.3.1", series_uid="9.3",
                           status=ResultStatus.ACCEPTED, status_by="dr")
        store.set_status(session, seg.id, "corrected", by="dr", correction_id=fix.id)
        fixed_sr = store.record(session, ResultKey(ResultKind.SR, ("1.2.3", "9.3.1"),
                                                   "pyradiomics", "3"), source, orthanc_id="d",
                                sop_instance_uid="9.4.1", series_uid="9.4",
                                derived_from_id=fix.id)
        store.replace_features(session, fixed_sr, table(50.0))
        return {"seg": seg.id, "sr": sr.id, "fix": fix.id, "fixed_sr": fixed_sr.id}


def request_for(url: str) -> Request:
    """What Explore's page functions read of a request: the app's site context."""
    app = SimpleNamespace(state=SimpleNamespace(ctx=SimpleNamespace(catalog_url=url,
                                                                    name="lab")))
    return Request({"type": "http", "app": app, "headers": [], "session": {}})


def test_every_consumer_takes_the_correction(empty_catalog: str) -> None:
    from radflow.cohorts import CohortDefinition, count_series
    from radflow.explore.viewer import _series
    from radflow.explore.web import _series_rows
    from radflow.federation.site_data import feature_table as site_features
    from radflow.results import store

    ids = corrected_case(empty_catalog)
    with session_scope(empty_catalog) as session:  # the export
        rows = store.feature_table(session).rows
        history = store.feature_table(session, current_only=False).rows
    assert {(r["segment_label"], r["result_id"], r["value"]) for r in rows} == {
        ("liver", ids["fixed_sr"], 51.0), ("spleen", ids["fixed_sr"], 52.0)}
    assert len(history) == 4  # the model SEG's SR keeps its values, out of the export

    page = _series(request_for(empty_catalog), "1.2.3")  # Explore's series page
    assert [(s["uid"], s["current"]) for s in page["segs"]] == [("9.3", True), ("9.1", False)]
    assert {r["id"] for r in page["results"] if r["current"]} == {ids["fix"], ids["fixed_sr"]}
    assert [(r["segment_label"], r["value"]) for r in page["features"]] == [
        ("liver", 51.0), ("spleen", 52.0)]
    listed = _series_rows(request_for(empty_catalog), None, 0, 10)
    assert dict(next(r for r in listed if r["uid"] == "1.2.3")["results"]) == {
        "SEG accepted": 1, "SR draft": 1}

    everything = {"field": "modality", "op": "eq", "value": "CT"}  # federated site data
    table = site_features(empty_catalog, {"where": everything}, ["original_shape_VoxelVolume"],
                          ["liver", "spleen"])
    assert table.series == ["1.2.3"]
    assert table.values("original_shape_VoxelVolume", "liver").tolist() == [51.0]
    assert table.values("original_shape_VoxelVolume", "spleen").tolist() == [52.0]

    with session_scope(empty_catalog) as session:  # has_result (the hub-bound counts)
        for kind, n in (("SEG", 1), ("SR", 1), ("RTSTRUCT", 0)):
            definition = CohortDefinition.parse({"where": {"has_result": kind}})
            assert count_series(session, definition) == n
        store.set_status(session, ids["fix"], "rejected", by="dr")
        assert count_series(session, CohortDefinition.parse(
            {"where": {"has_result": "SR"}})) == 0  # the SR of a rejected correction is not
        assert store.feature_table(session).rows == []
