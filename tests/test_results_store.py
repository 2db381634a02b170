"""The core result service on a real catalog: keys, statuses and their transitions, lineage,
superseding, feature tables per result, and deletion with the source series."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import one_study_catalog
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
