"""The result service with the real plugins, Orthanc and Prefect: cached answers carry only
their own features; results of two SEG models stay apart in the catalog as in Orthanc; results
go with their deleted source; permanent failures run once, never three times; --force stores a
new object that supersedes the old; two producers racing on one key record one result."""

from __future__ import annotations

import contextvars
import io
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pydicom
import pytest
from conftest import send, wait_settled
from pydicom.uid import SecondaryCaptureImageStorage
from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import DerivedResult, FeatureValue
from radflow.results import ProducerContext, producer
from radflow.site.registration import site_prefect
from radflow.types import DerivedRef, FeatureTable, SeriesRef

pytestmark = [pytest.mark.services, pytest.mark.slow]


@pytest.fixture()
def case(orthanc, site, synth_dir: Path) -> SeriesRef:
    wait_settled(site)
    send(site, synth_dir / "case_001")
    wait_settled(site)
    uid = json.loads((synth_dir / "manifest.json").read_text())["cases"][1]["series_uid"]
    return orthanc.series_by_uid(uid)


def sr_instances(orthanc, study_uid: str) -> int:
    return sum(s.instance_count for s in orthanc.find_series(StudyInstanceUID=study_uid,
                                                              Modality="SR"))


def test_results_follow_their_inputs(orthanc, site, case, tmp_path: Path, cli,
                                     radflow_home: Path) -> None:
    from prefect import flow

    from radflow_nnunet.models import DEFAULT_MODEL, export_zip, get_model, install_zip
    from radflow_nnunet.tasks import segment_series
    from radflow_radiomics.block import RadiomicsParams
    from radflow_radiomics.tasks import quantify_segmentation

    install_zip(export_zip(get_model(DEFAULT_MODEL), tmp_path / "m.zip"), name="abdomen-copy")

    @flow
    def two_models_two_parameter_sets():
        seg_a = segment_series(case, site="alpha")
        full = quantify_segmentation(seg_a, site="alpha")
        first = quantify_segmentation(seg_a, params="firstorder", site="alpha")
        cached = quantify_segmentation(seg_a, params="firstorder", site="alpha")
        seg_b = segment_series(case, model="abdomen-copy", site="alpha")
        return seg_a, full, first, cached, seg_b, quantify_segmentation(seg_b, site="alpha")

    with site_prefect(site):
        RadiomicsParams(feature_classes={"firstorder": []}).save("firstorder", overwrite=True)
        seg_a, full, first, cached, seg_b, other = two_models_two_parameter_sets()

    # a cached answer carries its own features, not every feature of the series
    assert cached.cached and cached.result_id == first.result_id
    assert {r["feature"].split("_")[1] for r in cached.features.rows} == {"firstorder"}
    assert len(cached.features.rows) == len(first.features.rows) < len(full.features.rows)
    # two SEG models: two SEGs, two SRs from them, in the catalog as in Orthanc
    assert seg_b.sop_instance_uid != seg_a.sop_instance_uid and seg_b.algorithm == "abdomen-copy"
    assert other.key != full.key
    with session_scope(site.catalog_url) as session:
        srs = session.exec(select(DerivedResult).where(
            DerivedResult.kind == "SR", DerivedResult.source_series_uid == case.series_uid)).all()
    assert len(srs) == 3 == sr_instances(orthanc, case.study_uid)
    assert {r.derived_from_id for r in srs} == {seg_a.result_id, seg_b.result_id}

    # the source goes: its results and features go, and the export no longer has them
    orthanc.delete("series", case.orthanc_id)
    wait_settled(site)
    with session_scope(site.catalog_url) as session:
        assert session.exec(select(DerivedResult).where(
            DerivedResult.source_series_uid == case.series_uid)).all() == []
        assert session.exec(select(FeatureValue).where(
            FeatureValue.source_series_uid == case.series_uid)).all() == []
    out = tmp_path / "features.csv"
    cli("pipeline", "features", "--site", "alpha", "--out", str(out), check=True)
    assert case.series_uid not in out.read_text()


def task_runs(site, flow_run_id) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with site_prefect(site), get_client(sync_client=True) as client:
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(
            any_=[flow_run_id])))


def test_an_unknown_model_fails_once_with_its_fix(orthanc, site, case) -> None:
    """A permanent failure (here an unknown model) fails at once with its reason: the segment
    task runs once, not three times. (An empty result, the other permanent failure of a
    producer, is tested with the bone example plugin in test_plugins.)"""
    from radflow.flows.segment_quantify import segment_and_quantify_case

    with site_prefect(site):
        state = segment_and_quantify_case(case, model="no-such-model", site="alpha",
                                          return_state=True)
    assert state.is_failed() and "no nnU-Net model named 'no-such-model'" in state.message
    runs = [t for t in task_runs(site, state.state_details.flow_run_id)
            if t.name.startswith("segment")]
    assert len(runs) == 1 and runs[0].run_count == 1 and runs[0].state.is_failed()


@producer("OT", algorithm="radflow-test-copy", version="1")
def tagged_copy(ctx: ProducerContext, series: SeriesRef) -> Any:
    """A copy of the series' first image as a Secondary Capture under the key's UIDs."""
    first = ctx.orthanc.series_instances(series.orthanc_id)[0]
    ds = pydicom.dcmread(io.BytesIO(ctx.orthanc.instance_file(first)))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.SeriesInstanceUID, ds.Modality, ds.SeriesDescription = ctx.series_uid, "OT", "a copy"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = ctx.instance_uid
    return ds


@producer("FEATURES", algorithm="radflow-test-size", version="1")
def size_of(ctx: ProducerContext, image: DerivedRef) -> FeatureTable:
    """A one-value table made from a result (it follows that result when it is superseded)."""
    return FeatureTable([{"source_series_uid": image.source.series_uid, "segment_number": 1,
                          "segment_label": "whole", "feature": "radflow_test_size",
                          "value": float(len(ctx.orthanc.instance_file(image.orthanc_id))),
                          "unit": "byte"}])


def test_force_stores_a_new_object_that_supersedes_the_old(orthanc, site, case, cli) -> None:
    """--force: a new generation of the key (new UIDs), stored beside the old object; the old
    result (accepted) and the table made from it become superseded, naming the new one, which
    starts as draft saying why; later calls return the new one."""
    from radflow.results import store

    with site_prefect(site):  # the site runtime comes from a block on the site's Prefect
        first = tagged_copy.fn(case, site="alpha")
        assert tagged_copy.fn(case, site="alpha").result_id == first.result_id  # cached
        with session_scope(site.catalog_url) as session:
            store.set_status(session, first.result_id, "accepted", by="dr-a")
        table = size_of.fn(first, site="alpha")

        forced = tagged_copy.fn(case, site="alpha", force=True)
        assert not forced.cached and forced.result_id != first.result_id
        assert forced.sop_instance_uid != first.sop_instance_uid
        assert forced.orthanc_id != first.orthanc_id
        for ref in (first, forced):  # the old object stays in Orthanc
            assert orthanc.resource("instances", ref.orthanc_id)["ID"] == ref.orthanc_id
        with session_scope(site.catalog_url) as session:
            old, new, old_table = (session.get(DerivedResult, r.result_id)
                                   for r in (first, forced, table))
            assert (old.status, old.status_reason) == (
                "superseded", f"recomputed by force as result {new.id}")
            assert (new.status, new.parent_id) == ("draft", old.id)
            assert new.status_reason == (f"recomputed by force from result {old.id} "
                                         "(which was accepted)")
            assert old_table.status == "superseded"
            assert f"result {old.id}" in old_table.status_reason
        again = tagged_copy.fn(case, site="alpha")
        assert again.cached and again.result_id == forced.result_id  # the newest generation
    # `results list`: the current result; --all: the history, saying which is current
    listed = json.loads(cli("results", "list", "--site", "alpha", "--series", case.series_uid,
                            "--kind", "OT", "--json", check=True).stdout)
    assert [(r["id"], r["status"], r["current"]) for r in listed] == [(forced.result_id, "draft",
                                                                       True)]
    history = json.loads(cli("results", "list", "--site", "alpha", "--series", case.series_uid,
                             "--kind", "ot", "--all", "--json", check=True).stdout)
    assert [(r["id"], r["status"], r["current"]) for r in history] == [
        (forced.result_id, "draft", True), (first.result_id, "superseded", False)]
    bad = cli("results", "list", "--site", "alpha", "--status", "approved")
    assert bad.returncode != 0 and "no result status 'approved'" in bad.stdout + bad.stderr


def test_two_producers_racing_on_one_key_record_one_result(orthanc, site, case) -> None:
    """Two runs compute the same result at once (both past the cache check, a barrier makes
    sure): both get the one row the winner recorded; no IntegrityError."""
    barrier = threading.Barrier(2, timeout=60)

    @producer("FEATURES", algorithm="radflow-test-race", version="1")
    def raced(ctx: ProducerContext, series: SeriesRef) -> FeatureTable:
        barrier.wait()
        return FeatureTable([{"source_series_uid": series.series_uid, "segment_number": 1,
                              "segment_label": "whole", "feature": "radflow_test_race",
                              "value": 1.0, "unit": "1"}])

    with site_prefect(site), ThreadPoolExecutor(2) as pool:  # each with the site's settings
        calls = [pool.submit(contextvars.copy_context().run, raced.fn, case, site="alpha")
                 for _ in range(2)]
        refs = [c.result() for c in calls]
    assert refs[0].result_id == refs[1].result_id
    with session_scope(site.catalog_url) as session:
        rows = session.exec(select(DerivedResult).where(
            DerivedResult.algorithm == "radflow-test-race")).all()
        values = session.exec(select(FeatureValue).where(
            FeatureValue.feature == "radflow_test_race")).all()
    assert len(rows) == 1 and len(values) == 1
