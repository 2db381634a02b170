"""Releases and combined results as a coordinator reads them (pure logic: the tables the study
page, the study report and a site's Federation page render): numbers with their units, counts
as integers, suppressed values named, axes named from the job's parameters."""

from __future__ import annotations

from pathlib import Path

import yaml

from radflow.federation.release import ReleaseSchema
from radflow.federation.tables import combined_tables, params_rows, release_tables
from radflow.federation.units import count, feature_unit, number
from radflow.hub.study_view import round_schema, study_view

FLOWS = Path(__file__).parents[1] / "federation" / "flows"
PARAMS = {"features": ["original_firstorder_Mean", "original_shape_VoxelVolume"],
          "segments": ["liver", "spleen"], "bins": 4,
          "cohort": {"level": "series", "version": 1,
                     "where": {"all": [{"field": "modality", "op": "eq", "value": "CT"},
                                       {"field": "slice_thickness", "op": "lte", "value": 3}]}}}


def schema(flow: str) -> ReleaseSchema:
    text = (FLOWS / flow / "radflow-flow.yaml").read_text()
    return ReleaseSchema.model_validate(yaml.safe_load(text)["release_schema"])


def texts(table: dict) -> list[list[str]]:
    return [[c["text"] for c in row] for row in table["rows"]]


def test_numbers_are_written_for_people() -> None:
    assert number(6.48286e10) == "6.483 × 10¹⁰" and number(-3.2e-5) == "-3.2 × 10⁻⁵"
    assert number(1124770.4) == "1,124,770" and number(12.3456) == "12.35"
    assert number(0.0123456) == "0.01235" and number(0.0) == "0" and number(9.99996e9) == \
        "1 × 10¹⁰"
    assert count(12345) == "12,345" and count(7.0) == "7" and count(None) == "suppressed"
    volume = feature_unit("original_shape_VoxelVolume")  # mm³ in the catalog, mL shown
    assert volume.show(1124770.0) == "1,125 mL" and volume.power(2).show(6.48286e10) == \
        "64,829 mL²"
    assert feature_unit("original_firstorder_Mean").show(75.7332) == "75.73 HU"
    assert feature_unit("original_firstorder_Variance").power(2).symbol == "HU⁴"
    assert feature_unit("original_shape_Maximum3DDiameter").symbol == "mm"
    assert feature_unit("original_glcm_Contrast").show(2.5) == "2.5"  # no unit


def test_a_release_of_statistics_becomes_tables_with_units() -> None:
    release = {"n": 4, "cells": [[4, None], [4, 3]], "sums": [[300.5, None], [4e6, 6e5]],
               "m2": [[10.0, None], [1e10, 2e9]], "span_low": [[50, None], [7e5, 1e5]],
               "span_high": [[90, None], [1.2e6, 3e5]]}
    counts, cells = release_tables(release, PARAMS,
                                   round_schema(schema("federated-feature-statistics"),
                                                release))
    assert texts(counts) == [["n", "4", "series of the cohort with features (the cohort size)"]]
    assert [c["label"] for c in cells["columns"]][:3] == ["Feature", "Segment", "values"]
    rows = texts(cells)
    assert rows[0] == ["original_firstorder_Mean", "liver", "4", "300.5 HU", "10 HU²", "50 HU",
                       "90 HU"]
    assert rows[1][2:] == ["suppressed"] * 5  # the gate suppressed the cell: it says so
    assert rows[2][3:] == ["4,000 mL", "10,000 mL²", "700 mL", "1,200 mL"]


def test_histograms_show_what_was_released_and_what_was_suppressed() -> None:
    release = {"n": 5, "histograms": [[[0, None, 3, 2], [1, 1, None, None]],
                                      [[0, 0, 0, 5], [5, 0, 0, 0]]]}
    _, histograms = release_tables(release, PARAMS)  # no schema: the axes from the parameters
    assert texts(histograms)[0] == ["original_firstorder_Mean", "liver", "5", "4", "1",
                                    "· × 3 2"]
    assert histograms["rows"][1][4]["cls"] == "num suppressed"


def test_a_model_release_is_named_per_parameter() -> None:
    release = {"n": 30, "events": 12, "nonevents": 18, "gradient": [0.1, 2e-5],
               "hessian": [[3.0, 1e5], [1e5, 2e12]], "loglik": -20.5}
    tables = release_tables(release, {"terms": ["age"]},
                            schema("federated-logistic-regression"))
    assert texts(tables[1]) == [["intercept", "0.1"], ["age", "2 × 10⁻⁵"]]
    assert texts(tables[2])[1] == ["age", "100,000", "2 × 10¹²"]


def test_combined_quantiles_carry_their_interval_and_the_page_lists_waiting_sites() -> None:
    combined = {"features": [{"feature": "original_shape_VoxelVolume", "segment": "liver",
                              "n": 9, "mean": 896767.0, "variance": 4.46868e10,
                              "median": 884375.0}],
                "quantile_intervals": [{"feature": "original_shape_VoxelVolume",
                                        "segment": "liver", "quantile": 0.5, "low": 877083.0,
                                        "high": 891667.0, "error_bound": 7291.7}],
                "sites_not_in": {"epsilon": "policy_violation:min_cohort"}}
    (features, intervals), scalars = combined_tables(combined)
    assert texts(features) == [["original_shape_VoxelVolume", "liver", "9", "896.8 mL",
                                "44,687 mL²", "884.4 mL"]]
    assert features["rows"][0][-1]["sub"] == "877.1–891.7"  # the median's interval, in mL
    assert intervals["collapsed"] and scalars == [("sites not in",
                                                   "epsilon: policy_violation:min_cohort")]
    assert params_rows(PARAMS)[1] == ("cohort", "modality = CT and slice_thickness ≤ 3")
    starting = study_view({"state": "starting", "sites": [
        {"site": "alpha", "status": "waiting"}, {"site": "delta", "status": "waiting"}]}, None)
    assert [(v["site"], v["state"].split(":")[0]) for v in starting["sites"]] == [
        ("alpha", "waiting"), ("delta", "waiting")]


def test_the_report_is_the_page_s_tables_with_the_json_behind_toggles(tmp_path: Path) -> None:
    import re

    from radflow.hub.studies import write_report

    png = tmp_path / "distributions.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    release = {"n": 5, "histograms": [[[0, None, 3, 2], [1, 1, None, None]],
                                      [[0, 0, 0, 5], [5, 0, 0, 0]]]}
    result = {"study": "s1", "flow": "federated-feature-statistics", "version": "sha256:ab",
              "params": PARAMS, "finished": "2026-12-05T18:00:00+00:00",
              "sites": [{"site": "alpha", "status": "released", "release": release,
                         "policy": {"min_cell": 2}},
                        {"site": "epsilon", "status": "refused",
                         "refusal": "policy_violation:min_cohort"}],
              "combined": {"features": [{"feature": "original_shape_VoxelVolume",
                                         "segment": "liver", "n": 9, "mean": 896767.0}]}}
    write_report(result, tmp_path / "report.html", [png],
                 schema("federated-feature-statistics"))
    report = (tmp_path / "report.html").read_text()
    assert 'src="data:image/png;base64,' in report and "896.8 mL" in report
    assert 'data-table="histograms"' in report and "policy_violation:min_cohort" in report
    assert "alpha</strong>: suppressed in original_firstorder_Mean / liver" in report
    outside = re.sub(r"<details.*?</details>", "", report, flags=re.S)
    assert "&#34;" not in outside and '{"' not in outside  # every JSON behind a toggle
