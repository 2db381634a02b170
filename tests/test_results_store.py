"""The core result service on a real catalog: keys, statuses and their transitions, lineage,
superseding, feature tables per result, and deletion with the source series."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from conftest import ENGINES, new_database, one_study_catalog
from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import DerivedResult, FeatureValue, Series
from radflow.catalog.store import delete_series
from radflow.enums import ResultKind, ResultStatus
from radflow.errors import ConfigurationError, PolicyViolation
from radflow.results import ResultKey, store
from radflow.types import FeatureTable, ReportRef, SegmentationRef, SeriesRef

SOURCE = SeriesRef("ct-orthanc", "1.2.3")


@pytest.fixture()
def catalog(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    study_pk = one_study_catalog(url)
    with session_scope(url) as session:
        session.add(Series(orthanc_id="ct-orthanc", series_uid="1.2.3", study_pk=study_pk,
                           study_uid="1", modality="CT"))
    return url


def features(label: str, n: int) -> FeatureTable:
    return FeatureTable([{"source_series_uid": "1.2.3", "segment_number": 1,
                          "segment_label": label, "feature": f"f{k}", "code": None,
                          "value": float(k), "unit": "1"} for k in range(n)])


def seg_key(model: str = "model-a", version: str = "1") -> ResultKey:
    return ResultKey(ResultKind.SEG, ("1.2.3",), model, version, "p")


def test_keys_hash_everything_that_determines_a_result() -> None:
    key = seg_key()
    assert key.digest == seg_key().digest and key.digest.startswith("sha256:")
    variants = [seg_key("model-b"), seg_key(version="2"),
                ResultKey(ResultKind.SEG, ("1.2.3",), "model-a", "1", "q"),
                ResultKey(ResultKind.SEG, ("1.2.4",), "model-a", "1", "p"),
                ResultKey(ResultKind.SR, ("1.2.3",), "model-a", "1", "p")]
    assert len({v.digest for v in variants} | {key.digest}) == 6
    assert key.series_uid != key.instance_uid and key.uid("segment", "1").startswith("2.25.")


def test_features_belong_to_their_result(catalog: str) -> None:
    """Two SRs of one series (two parameter sets, or SEGs of two models) keep their own feature
    values: the cached answer of one never carries the other's."""
    with session_scope(catalog) as session:
        seg_a = store.record(session, seg_key(), SOURCE, orthanc_id="a", sop_instance_uid="9.1",
                             series_uid="9")
        seg_b = store.record(session, seg_key("model-b"), SOURCE, orthanc_id="b",
                             sop_instance_uid="9.2", series_uid="9b")
        sr_a = store.record(session, ResultKey(ResultKind.SR, ("1.2.3", "9.1"), "pyradiomics",
                                               "3.0.1", "default"), SOURCE, orthanc_id="c",
                            sop_instance_uid="9.3", series_uid="9c", derived_from_id=seg_a.id)
        sr_b = store.record(session, ResultKey(ResultKind.SR, ("1.2.3", "9.2"), "pyradiomics",
                                               "3.0.1", "default"), SOURCE, orthanc_id="d",
                            sop_instance_uid="9.4", series_uid="9d", derived_from_id=seg_b.id)
        store.replace_features(session, sr_a, features("liver", 3))
        store.replace_features(session, sr_b, features("kidney", 5))
        assert len(store.features_of(session, sr_a.id).rows) == 3
        assert store.features_of(session, sr_b.id).segments() == ["kidney"]
        assert len(store.feature_table(session, series_uids=["1.2.3"]).rows) == 8
        ref = store.to_ref(sr_a, SOURCE, features=store.features_of(session, sr_a.id))
        assert isinstance(ref, ReportRef) and ref.features.segments() == ["liver"]
        assert isinstance(store.to_ref(seg_a), SegmentationRef)


def test_statuses_change_by_the_rules_and_keep_lineage(catalog: str) -> None:
    with session_scope(catalog) as session:
        seg = store.record(session, seg_key(), SOURCE, orthanc_id="a", sop_instance_uid="9.1",
                           series_uid="9")
        assert seg.status == ResultStatus.DRAFT
        store.set_status(session, seg.id, "accepted", by="dr-a", reason="looks right")
        assert (seg.status, seg.status_by) == (ResultStatus.ACCEPTED, "dr-a")
        with pytest.raises(ConfigurationError, match="needs the corrected version"):
            store.set_status(session, seg.id, "corrected", by="dr-a")
        fixed = store.record(session, ResultKey(ResultKind.SEG, ("1.2.3", "9.1"), "correction",
                                                "1", ""), SOURCE, orthanc_id="e",
                             sop_instance_uid="9.5", series_uid="9e")
        store.set_status(session, seg.id, ResultStatus.CORRECTED, by="dr-b", correction_id=fixed.id)
        assert fixed.parent_id == seg.id
        assert [r.id for r in store.lineage(session, fixed.id)] == [fixed.id, seg.id]
        with pytest.raises(PolicyViolation, match="is corrected; it cannot become accepted"):
            store.set_status(session, seg.id, "accepted", by="dr-a")
        with pytest.raises(ValueError):
            store.set_status(session, seg.id, "approved", by="dr-a")


def test_a_new_version_supersedes_the_old(catalog: str) -> None:
    with session_scope(catalog) as session:
        old = store.record(session, seg_key(version="1"), SOURCE, orthanc_id="a",
                           sop_instance_uid="9.1", series_uid="9")
        other_model = store.record(session, seg_key("model-b"), SOURCE, orthanc_id="b",
                                   sop_instance_uid="9.2", series_uid="9b")
        new = store.record(session, seg_key(version="2"), SOURCE, orthanc_id="c",
                           sop_instance_uid="9.3", series_uid="9c")
        assert old.status == ResultStatus.SUPERSEDED and "made again" in old.status_reason
        assert new.status == other_model.status == ResultStatus.DRAFT
        again = store.record(session, seg_key(version="2"), SOURCE, orthanc_id="c",
                             sop_instance_uid="9.3", series_uid="9c")
        assert again.id == new.id  # one row per key, however often it is recorded


def test_deleting_a_series_deletes_its_results_and_theirs(catalog: str) -> None:
    with session_scope(catalog) as session:
        seg = store.record(session, seg_key(), SOURCE, orthanc_id="seg-inst",
                           sop_instance_uid="9.1", series_uid="9")
        sr = store.record(session, ResultKey(ResultKind.SR, ("1.2.3", "9.1"), "pyradiomics",
                                             "3.0.1", "default"), SOURCE, orthanc_id="sr-inst",
                          sop_instance_uid="9.3", series_uid="9c", derived_from_id=seg.id)
        store.replace_features(session, sr, features("liver", 4))
    with session_scope(catalog) as session:
        assert delete_series(session, "ct-orthanc")
    with session_scope(catalog) as session:
        assert session.exec(select(DerivedResult)).all() == []
        assert session.exec(select(FeatureValue)).all() == []


def test_deleting_a_seg_deletes_what_was_made_from_it(catalog: str) -> None:
    with session_scope(catalog) as session:
        seg = store.record(session, seg_key(), SOURCE, orthanc_id="seg-inst",
                           sop_instance_uid="9.1", series_uid="9")
        store.record(session, ResultKey(ResultKind.SR, ("1.2.3", "9.1"), "pyradiomics", "3.0.1",
                                        "default"), SOURCE, orthanc_id="sr-inst",
                     sop_instance_uid="9.3", series_uid="9c", derived_from_id=seg.id)
        other = store.record(session, seg_key("model-b"), SOURCE, orthanc_id="b",
                             sop_instance_uid="9.2", series_uid="9b")
        assert store.delete_for_series(session, "seg-series", ["seg-inst"]) == 2
        assert [r.id for r in session.exec(select(DerivedResult))] == [other.id]


@pytest.fixture(params=ENGINES)
def any_catalog(request, tmp_path: Path) -> str:
    url = new_database(request, request.param, tmp_path, "results")
    study_pk = one_study_catalog(url)
    with session_scope(url) as session:
        session.add(Series(orthanc_id="ct-orthanc", series_uid="1.2.3", study_pk=study_pk,
                           study_uid="1", modality="CT"))
    return url


def test_two_recorders_of_one_key_make_one_row(any_catalog: str, monkeypatch) -> None:
    """Both find the key missing (a barrier holds them there), both insert: the loser's insert
    fails in its savepoint and it returns the winner's row, with no exception."""
    barrier = threading.Barrier(2, timeout=30)
    find = store.find

    def find_then_wait(session, key):
        row = find(session, key)
        if threading.current_thread().name.startswith("recorder"):
            barrier.wait()
        return row

    monkeypatch.setattr(store, "find", find_then_wait)
    answers, errors = {}, []

    def recorder(name: str) -> None:
        try:
            with session_scope(any_catalog) as session:
                row = store.record(session, seg_key(), SOURCE, orthanc_id="a",
                                   sop_instance_uid="9.1", series_uid="9",
                                   detail={"by": name})
                answers[name] = row.id
        except Exception as exc:  # noqa: BLE001  (the test reports it)
            errors.append(exc)

    threads = [threading.Thread(target=recorder, args=(n,), name=n)
               for n in ("recorder-1", "recorder-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == [] and len(answers) == 2
    assert answers["recorder-1"] == answers["recorder-2"]
    with session_scope(any_catalog) as session:
        assert len(session.exec(select(DerivedResult)).all()) == 1


def test_recording_again_keeps_lineage_and_status(catalog: str) -> None:
    """The review step records the correction again on every re-run of the case: its parent
    (the corrected SEG) and its status stay."""
    correction = ResultKey(ResultKind.SEG, ("1.2.3", "9.1", "9.5"), "correction", "1", "dr")
    with session_scope(catalog) as session:
        seg = store.record(session, seg_key(), SOURCE, orthanc_id="a", sop_instance_uid="9.1",
                           series_uid="9")
        sr = store.record(session, ResultKey(ResultKind.SR, ("1.2.3", "9.1"), "pyradiomics", "3",
                                             "default"), SOURCE, orthanc_id="c",
                          sop_instance_uid="9.3", series_uid="9c", derived_from_id=seg.id)
        fixed = store.record(session, correction, SOURCE, orthanc_id="e", sop_instance_uid="9.5",
                             series_uid="9e", status=ResultStatus.ACCEPTED, status_by="dr")
        store.set_status(session, seg.id, "corrected", by="dr", correction_id=fixed.id)
    with session_scope(catalog) as session:  # the re-run
        again = store.record(session, correction, SOURCE, orthanc_id="e", sop_instance_uid="9.5",
                             series_uid="9e", status=ResultStatus.ACCEPTED, status_by="dr")
        sr_again = store.record(session, ResultKey(ResultKind.SR, ("1.2.3", "9.1"),
                                                   "pyradiomics", "3", "default"), SOURCE,
                                orthanc_id="c", sop_instance_uid="9.3", series_uid="9c")
        assert again.id == fixed.id and again.parent_id == seg.id
        assert again.status == ResultStatus.ACCEPTED
        assert sr_again.id == sr.id and sr_again.derived_from_id == seg.id
        assert [r.id for r in store.lineage(session, fixed.id)] == [fixed.id, seg.id]


def test_superseding_compares_every_input(catalog: str) -> None:
    """A new pyradiomics version's SR of one SEG supersedes the old SR of that SEG, not the SR of
    another SEG of the same series."""
    def sr(seg_uid: str, version: str, n: int):
        return store.record(session, ResultKey(ResultKind.SR, ("1.2.3", seg_uid), "pyradiomics",
                                               version, "default"), SOURCE, orthanc_id=f"sr{n}",
                            sop_instance_uid=f"8.{n}", series_uid=f"8{n}")

    with session_scope(catalog) as session:
        old_a, old_b = sr("9.1", "3.0", 1), sr("9.2", "3.0", 2)
        new_a = sr("9.1", "3.1", 3)
        assert old_a.status == ResultStatus.SUPERSEDED
        assert f"made again as result {new_a.id}" in old_a.status_reason
        assert old_b.status == new_a.status == ResultStatus.DRAFT


def test_a_recomputation_supersedes_the_old_result_and_what_was_made_from_it(catalog: str) -> None:
    first = seg_key()
    with session_scope(catalog) as session:
        seg = store.record(session, first, SOURCE, orthanc_id="a", sop_instance_uid="9.1",
                           series_uid="9")
        store.set_status(session, seg.id, "accepted", by="dr")
        sr = store.record(session, ResultKey(ResultKind.SR, ("1.2.3", "9.1"), "pyradiomics", "3",
                                             "default"), SOURCE, orthanc_id="c",
                          sop_instance_uid="9.3", series_uid="9c", derived_from_id=seg.id)
        key, row = store.latest(session, first)
        assert (key, row.id) == (first, seg.id)
        second = first.next_generation()
        assert second.digest != first.digest and second.instance_uid != first.instance_uid
        new = store.record(session, second, SOURCE, orthanc_id="b", sop_instance_uid="9.2",
                           series_uid="9b", recomputes=seg.id)
        assert (new.status, new.parent_id) == (ResultStatus.DRAFT, seg.id)
        assert new.status_reason == f"recomputed by force from result {seg.id} (which was accepted)"
        assert seg.status == sr.status == ResultStatus.SUPERSEDED
        assert seg.status_reason == f"recomputed by force as result {new.id}"
        assert f"made from result {seg.id}" in sr.status_reason
        assert store.latest(session, first) == (second, new)
    assert ResultKey(ResultKind.SEG, ("1.2.3",), "model-a", "1", "p", 0).digest == first.digest
