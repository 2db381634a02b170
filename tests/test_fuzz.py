"""Malformed and conflicting input pushed into a running site, each file on its own C-STORE
association or STOW-RS request: afterwards the site is healthy and the catalog holds exactly
Orthanc's series, each ``ok``, ``warning`` or ``error`` with its findings; every UID that Orthanc
holds as several resources is a finding on every series involved, and on no other.

The short variant runs in `make test`; ``bench/bench_fuzz.py --files 400`` is the long one."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pydicom.data
import pytest
from conftest import wait_settled
from sqlmodel import select

from radflow.catalog import conflicts
from radflow.catalog.db import session_scope
from radflow.catalog.models import Finding, Instance, Series, Study
from radflow.data.fuzz import build_corpus, send_each_dicom, send_each_stow
from radflow.enums import SeriesStatus, Severity
from radflow.synth import synthesize

pytestmark = [pytest.mark.services, pytest.mark.slow]
PYDICOM_FILES = Path(pydicom.data.__file__).parent / "test_files"
SOURCES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "rtplan.dcm", "SC_rgb.dcm",
           "emri_small.dcm", "MR_small_RLE.dcm", "JPEG-lossy.dcm", "image_dfl.dcm",
           "ExplVR_BigEnd.dcm"]


def fuzz_sources(tmp: Path) -> list[Path]:
    phantom = synthesize(tmp / "phantom", 1, seed=11, matrix=32)[0]
    slices = sorted(phantom.dicom_dir.glob("*.dcm"))[:4]
    return [PYDICOM_FILES / name for name in SOURCES if (PYDICOM_FILES / name).exists()] + slices


def check_catalog(site, orthanc) -> dict[str, int]:
    """The catalog's invariants after a fuzz run; returns how many series carry each
    conflict code."""
    info = wait_settled(site, timeout=300)
    assert info["catalog_series"] == info["orthanc_series"] == len(orthanc.series_states())
    found: dict[str, int] = defaultdict(int)
    with session_scope(site.catalog_url) as session:
        rows = session.exec(select(Series)).all()
        findings = defaultdict(list)
        for f in session.exec(select(Finding)):
            findings[f.series_pk].append(f)
        studies = {s.id: s for s in session.exec(select(Study))}
        sop_series = defaultdict(set)
        for series_pk, uid in session.exec(select(Instance.series_pk, Instance.sop_instance_uid)):
            if uid:
                sop_series[uid].add(series_pk)
        by_study_uid, by_series_uid = defaultdict(set), defaultdict(set)
        for s in rows:
            if studies[s.study_pk].study_uid:
                by_study_uid[studies[s.study_pk].study_uid].add(s.study_pk)
            if s.series_uid:
                by_series_uid[s.series_uid].add(s.id)
        for s in rows:
            codes = {f.code for f in findings[s.id]}
            assert s.status in set(SeriesStatus)
            assert s.status == SeriesStatus.worst(f.severity for f in findings[s.id])
            if s.status == SeriesStatus.ERROR:
                assert any(f.severity == Severity.ERROR and f.message for f in findings[s.id])
            assert "catalog_failed" not in codes, [f.message for f in findings[s.id]]
            study_uid = studies[s.study_pk].study_uid
            expected = {
                conflicts.STUDY: bool(study_uid) and len(by_study_uid[study_uid]) > 1,
                conflicts.SERIES: bool(s.series_uid) and len(by_series_uid[s.series_uid]) > 1,
                conflicts.INSTANCE: any(len(sop_series[u]) > 1 for u, members in
                                        sop_series.items() if s.id in members),
            }
            for code, conflicted in expected.items():
                assert (code in codes) == conflicted, (code, s.orthanc_id, codes)
                found[code] += conflicted
    return found


def test_malformed_and_conflicting_input_loses_no_series(orthanc, site, manager,
                                                         tmp_path: Path) -> None:
    wait_settled(site)
    corpus = build_corpus(fuzz_sources(tmp_path), tmp_path / "corpus", count=48, seed=2024)
    assert {f.mutation for f in corpus} >= {"truncated", "flipped_header", "bogus_length",
                                            "wrong_syntax", "study_uid_other_patient",
                                            "series_uid_other_study", "sop_uid_other_content",
                                            "empty_uid"}
    intact = [f.path for f in corpus if f.mutation == "intact"]
    mutated = [f for f in corpus if f.mutation != "intact"]
    outcome = send_each_dicom(intact, host="127.0.0.1", port=site.config.ports.orthanc_dicom,
                              called_aet=site.config.aet)
    outcome |= send_each_dicom([f.path for f in mutated[0::2]], host="127.0.0.1",
                               port=site.config.ports.orthanc_dicom, called_aet=site.config.aet)
    outcome |= send_each_stow([f.path for f in mutated[1::2]], orthanc)
    stored = [p for p, reason in outcome.items() if reason is None]
    assert len(stored) >= 20 and len(stored) < len(corpus)  # some refused, most taken

    assert manager.status("alpha").state == "running"
    found = check_catalog(site, orthanc)
    assert found[conflicts.STUDY] >= 2 and found[conflicts.SERIES] >= 2, dict(found)
    assert found[conflicts.INSTANCE] >= 2, dict(found)

    # a conflict goes away with the resource that made it
    victim = next(s for s in orthanc.find_series(SeriesDescription="same SOP*"))
    orthanc.delete("series", victim.orthanc_id)
    after = check_catalog(site, orthanc)
    assert after[conflicts.INSTANCE] < found[conflicts.INSTANCE]
