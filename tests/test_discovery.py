"""Data discovery's rule (radflow.federation.discovery) on plain counts: what leaves under each
granularity, and the answers the hub gives from it."""

from __future__ import annotations

from collections import Counter

import pytest

from radflow.cohorts.definition import CohortDefinition, parse_short
from radflow.federation.discovery import NotAnswerable, answer, publishable
from radflow.federation.policy import SitePolicy


def _raw() -> dict:
    cells = Counter()
    # (modality, body part, maker, sex, age band, year, segmented, features)
    cells[("CT", "CHEST", "Siemens", "F", "60-69", "2021", "yes", "yes")] = 23
    cells[("CT", "CHEST", "Siemens", "M", "60-69", "2021", "no", "no")] = 14
    cells[("CT", "ABDOMEN", "GE", "M", "70-79", "2022", "no", "no")] = 7
    cells[("MR", "HEAD", "Philips", "F", "30-39", "2019", "no", "no")] = 31
    return {"cells": cells, "totals": {"series": 75, "studies": 40, "patients": 38,
                                       "accepted_segmentations": 4, "with_features": 23}}


def test_off_publishes_nothing_and_count_rounds_and_suppresses() -> None:
    assert publishable(_raw(), SitePolicy()) is None  # the default: off
    summary = publishable(_raw(), SitePolicy(discovery="count"))
    assert summary["rule"] == {"granularity": "count", "min_count": 10, "round_to": 10}
    assert summary["tables"]["modality"] == [["CT", 40], ["MR", 30]]  # 44 -> 40, 31 -> 30
    assert summary["tables"]["sex"] == [["F", 50], ["M", 20]]  # 54 -> 50, 21 -> 20
    # the 7 abdominal CTs are under 10: left out, also in the pair table
    assert summary["tables"]["modality+body_part"] == [["CT", "CHEST", 40], ["MR", "HEAD", 30]]
    assert summary["totals"] == {"series": 80, "studies": 40, "patients": 40,
                                 "with_features": 20}  # 4 accepted: left out
    exact = publishable(_raw(), SitePolicy(discovery="count", discovery_min_count=1,
                                           discovery_round_to=1))
    assert exact["tables"]["body_part"] == [["ABDOMEN", 7], ["CHEST", 37], ["HEAD", 31]]


def test_boolean_says_only_yes() -> None:
    summary = publishable(_raw(), SitePolicy(discovery="boolean"))
    assert summary["tables"]["modality"] == [["CT", True], ["MR", True]]
    assert summary["tables"]["body_part"] == [["CHEST", True], ["HEAD", True]]
    where = parse_short(["body_part=ABDOMEN"]).where
    said = answer({"b": summary}, where)
    assert said["sites"]["b"]["exists"] is False and "at least 10" in said["sites"]["b"]["rule"]


def test_answers_per_site_and_in_total() -> None:
    a = publishable(_raw(), SitePolicy(discovery="count"))
    b = publishable(_raw(), SitePolicy(discovery="count", discovery_round_to=5))
    said = answer({"a": a, "b": b}, parse_short(["modality=CT", "body_part=CHEST"]).where)
    assert said["dimensions"] == ["modality", "body_part"]
    assert said["sites"]["a"]["count"] == 40 and said["sites"]["b"]["count"] == 35  # 37
    assert said["total"] == 75 and said["sites_counted"] == 2
    assert "rounded to the nearest 5" in said["sites"]["b"]["rule"]
    ages = answer({"a": a}, parse_short(["age_years>=60"]).where)
    assert ages["sites"]["a"]["count"] == 40  # 37 in 60-69 -> 40; 70-79 (7) left out
    years = answer({"a": a}, CohortDefinition.parse({"field": "study_date", "op": "between",
                                                     "value": ["2020-01-01", "2021-12-31"]}).where)
    assert years["sites"]["a"]["count"] == 40
    seg = answer({"a": a}, CohortDefinition.parse({"all": [
        {"field": "modality", "op": "eq", "value": "CT"}, {"has_result": "SEG"}]}).where)
    assert seg["sites"]["a"]["count"] == 20  # 23
    makers = answer({"a": a}, parse_short(["manufacturer~SIEM"]).where)  # text: any case
    assert makers["sites"]["a"]["count"] == 40  # 37
    everything = answer({"a": a}, {"all": []})
    assert everything["sites"]["a"]["count"] == 80


@pytest.mark.parametrize(("where", "says"), [
    (["age_years>=65"], "splits a band"),
    (["kvp>=100"], "do not hold 'kvp'"),
    (["modality=CT", "body_part=CHEST", "patient_sex=F"], "at most two"),
])
def test_what_the_summaries_cannot_answer_is_said(where: list[str], says: str) -> None:
    a = publishable(_raw(), SitePolicy(discovery="count"))
    with pytest.raises(NotAnswerable) as caught:
        answer({"a": a}, parse_short(where).where)
    assert says in caught.value.message and caught.value.fix
