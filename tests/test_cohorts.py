"""Cohort definitions: validation, canonical hashing, SQL semantics (on a real SQLite catalog)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from conftest import ENGINES, new_database, one_study_catalog
from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import DerivedResult, Series, Study
from radflow.cohorts import CohortDefinition, count_series, parse_short, save_cohort, select_series
from radflow.errors import ConfigurationError


def test_equivalent_definitions_share_one_hash() -> None:
    a = CohortDefinition.parse({"version": 1, "where": {"all": [
        {"field": "modality", "op": "eq", "value": "ct"},
        {"field": "slice_thickness", "op": "lte", "value": 5}]}})
    b = CohortDefinition.parse({"where": {"all": [
        {"op": "lte", "value": 5.0, "field": "slice_thickness"},
        {"field": "modality", "op": "eq", "value": " CT "}]}})
    c = parse_short(["slice_thickness<=5", "modality=CT"])
    assert a.content_hash == b.content_hash == c.content_hash
    assert a.content_hash.startswith("sha256:") and len(a.content_hash) == 71
    single = CohortDefinition.parse({"all": [{"field": "modality", "op": "eq", "value": "CT"}]})
    bare = CohortDefinition.parse({"field": "modality", "op": "eq", "value": "CT"})
    assert single.content_hash == bare.content_hash
    other = parse_short(["slice_thickness<5", "modality=CT"])
    assert other.content_hash != a.content_hash
    assert CohortDefinition.parse(a.canonical_json()).content_hash == a.content_hash


@pytest.mark.parametrize("where,message", [
    ({"field": "colour", "op": "eq", "value": "x"}, "unknown field"),
    ({"field": "kvp", "op": "contains", "value": "1"}, "does not apply"),
    ({"field": "kvp", "op": "eq", "value": "120"}, "takes a number"),
    ({"field": "study_date", "op": "gte", "value": "01/02/2020"}, "YYYY-MM-DD"),
    ({"field": "kvp", "op": "between", "value": [140, 80]}, "is above high"),
    ({"all": []}, "non-empty list"),
    ({"has_result": 3}, "derived object"),
    ({"field": "modality", "op": "eq", "value": "CT", "extra": 1}, "unexpected key"),
])
def test_invalid_definitions_are_named(where, message) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        CohortDefinition.parse({"where": where})
    assert "radflow cohort fields" in info.value.fix


def test_unsupported_version_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="version 2"):
        CohortDefinition.parse({"version": 2, "where": {"has_result": "SEG"}})


@pytest.fixture(params=ENGINES)
def catalog(request, tmp_path: Path) -> str:
    url = new_database(request, request.param, tmp_path, "cohorts")
    rows = [  # modality, manufacturer, thickness, date, sex, age, contrast, description
        ("CT", "SIEMENS", 1.0, date(2020, 5, 1), "F", 34.0, True, "ABD 50% portal"),
        ("CT", "GE MEDICAL SYSTEMS", 5.0, date(2021, 7, 9), "M", 71.0, False, "abd native"),
        ("CT", None, 3.0, date(2023, 1, 2), "M", None, False, "chest"),
        ("MR", "Philips", 4.0, date(2022, 2, 2), "F", 55.0, False, "T1 axial"),
    ]
    study_pk = one_study_catalog(url)
    with session_scope(url) as session:
        for k, (mod, man, th, d, sex, age, con, desc) in enumerate(rows):
            session.add(Series(orthanc_id=f"s{k}", series_uid=f"1.{k}", study_pk=study_pk,
                               study_uid="1", modality=mod, manufacturer=man, slice_thickness=th,
                               study_date=d, patient_sex=sex, age_years=age, contrast=con,
                               series_description=desc))
        session.add(Series(orthanc_id="seg0", series_uid="9.0", study_pk=study_pk, study_uid="1",
                           modality="SEG", source_series_uid="1.0"))
        # has_result: a current result (s0's SEG); s1's SEG was rejected; s2 has a workstation
        # SEG only (a series in the catalog, not a result)
        session.add(DerivedResult(key="k0", kind="SEG", source_series_uid="1.0", algorithm="m",
                                  version="1", series_uid="9.0"))
        session.add(DerivedResult(key="k1", kind="SEG", source_series_uid="1.1", algorithm="m",
                                  version="1", status="rejected"))
        session.add(Series(orthanc_id="seg2", series_uid="9.2", study_pk=study_pk, study_uid="1",
                           modality="SEG", source_series_uid="1.2"))
    return url


def matching(url: str, where: dict) -> set[str]:
    with session_scope(url) as session:
        definition = CohortDefinition.parse({"where": where})
        found = {s.orthanc_id for s in select_series(session, definition)}
        assert count_series(session, definition) == len(found)
        return found


def test_filters_select_the_expected_series(catalog: str) -> None:
    assert matching(catalog, {"field": "modality", "op": "eq", "value": "ct"}) == {"s0", "s1", "s2"}
    assert matching(catalog, {"field": "manufacturer", "op": "contains", "value": "ge "}) == {"s1"}
    assert matching(catalog, {"field": "manufacturer", "op": "in",
                              "value": ["siemens", "PHILIPS"]}) == {"s0", "s3"}
    # "not SIEMENS" includes the series whose manufacturer is unknown
    assert matching(catalog, {"all": [{"field": "modality", "op": "eq", "value": "CT"},
                                      {"field": "manufacturer", "op": "ne", "value": "Siemens"}]}) \
        == {"s1", "s2"}
    assert matching(catalog, {"field": "slice_thickness", "op": "between", "value": [1, 3]}) == {"s0", "s2"}
    assert matching(catalog, {"field": "study_date", "op": "gte", "value": "2022-01-01"}) == {"s2", "s3"}
    assert matching(catalog, {"field": "age_years", "op": "exists", "value": False}) == {
        "s2", "seg0", "seg2"}
    assert matching(catalog, {"field": "contrast", "op": "eq", "value": True}) == {"s0"}
    assert matching(catalog, {"field": "series_description", "op": "contains", "value": "50%"}) == {"s0"}
    assert matching(catalog, {"field": "series_description", "op": "contains", "value": "_"}) == set()
    assert matching(catalog, {"has_result": "SEG"}) == {"s0"}
    assert matching(catalog, {"all": [{"field": "modality", "op": "eq", "value": "CT"},
                                      {"not": {"has_result": "SEG"}}]}) == {"s1", "s2"}
    assert matching(catalog, {"any": [{"field": "patient_sex", "op": "eq", "value": "f"},
                                      {"field": "age_years", "op": "gt", "value": 70}]}) == {"s0", "s1", "s3"}


def test_saving_is_idempotent_and_guards_names(catalog: str) -> None:
    ct = parse_short(["modality=CT"])
    with session_scope(catalog) as session:
        first = save_cohort(session, "ct", ct, description="all CT")
        again = save_cohort(session, "ct", parse_short(["modality=ct"]))
        assert again.content_hash == first.content_hash and again.description == "all CT"
        with pytest.raises(ConfigurationError, match="exists with another definition"):
            save_cohort(session, "ct", parse_short(["modality=MR"]))
        replaced = save_cohort(session, "ct", parse_short(["modality=MR"]), replace=True)
        assert replaced.content_hash == parse_short(["modality=MR"]).content_hash


def test_a_run_pins_its_series_once(catalog: str) -> None:
    """The first ask selects and pins; later asks (a retry, a resumed run) get the same series
    even after the catalog changed; a federated study can insist on the cohort's hash."""
    from radflow.errors import PolicyViolation
    from radflow.tasks.selection import pin_series

    definition = {"where": {"field": "modality", "op": "eq", "value": "CT"}}
    content_hash, first = pin_series(catalog, None, "run-1", definition=definition)
    assert {r.orthanc_id for r in first} == {"s0", "s1", "s2"}
    assert content_hash == CohortDefinition.parse(definition).content_hash
    with session_scope(catalog) as session:
        study = session.exec(select(Study)).first()
        session.add(Series(orthanc_id="s9", series_uid="1.9", study_pk=study.id, study_uid="1",
                           modality="CT"))
    again_hash, again = pin_series(catalog, None, "run-1", definition=definition)
    assert (again_hash, again) == (content_hash, first)  # the new CT series is not in this run
    _, other = pin_series(catalog, None, "run-2", definition=definition)
    assert "s9" in {r.orthanc_id for r in other}
    with pytest.raises(PolicyViolation, match="not the expected sha256:0000"):
        pin_series(catalog, None, "run-3", definition=definition, expect_hash="sha256:0000")
    with pytest.raises(ConfigurationError, match="exactly one of"):
        pin_series(catalog, None, "run-4")
