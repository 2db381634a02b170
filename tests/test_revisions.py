"""The one rule for numbering and naming SEG revisions (radflow.results.revisions), and the
revision creator's DICOM person name: pure logic, plain objects."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from pydicom.dataset import Dataset
from radflow_review.revision import person_name
from radflow_review.worklist import person

from radflow.results import revisions


def seg(label: str | None, number: int | None) -> Dataset:
    ds = Dataset()
    if label is not None:
        ds.ContentLabel = label
    if number is not None:
        ds.SeriesNumber = number
    return ds


def test_a_revision_number_is_read_from_its_seg() -> None:
    assert revisions.number_of(seg("CORRECTION", 9102)) == 2
    assert revisions.number_of(seg("CORRECTION", 9100)) is None  # no revision 0
    assert revisions.number_of(seg("CORRECTION", None)) is None
    assert revisions.number_of(seg("SEGMENTATION", 9102)) is None  # a model's or workstation's
    assert revisions.next_number([]) == 1
    assert revisions.next_number([None, 1, 3]) == 4  # after the highest, whatever was deleted


def test_every_screen_names_a_revision_the_same_way() -> None:
    model = SimpleNamespace(id=1, algorithm="radflow-abdomen-demo", version="0.1", parent_id=None,
                            detail="{}")
    fixed = SimpleNamespace(id=2, algorithm="correction", version="1", parent_id=1,
                            detail=json.dumps({"corrects": 1, "revision": 2}))
    workstation = SimpleNamespace(id=3, algorithm="correction", version="1", parent_id=None,
                                  detail=json.dumps({"corrects": 1}))
    orphan = SimpleNamespace(id=4, algorithm="correction", version="1", parent_id=None,
                             detail=json.dumps({"corrects": 99, "revision": 1}))
    titles = revisions.result_titles([model, fixed, workstation, orphan])
    assert titles == {1: "radflow-abdomen-demo 0.1", 2: "revision 2 of radflow-abdomen-demo 0.1",
                      3: "correction of radflow-abdomen-demo 0.1", 4: "revision 1 of a SEG"}
    assert revisions.parent_ids([model, fixed, workstation, orphan]) == {1, 99}
    assert revisions.result_titles([fixed], {1: model})[2] == titles[2]  # parent loaded apart


@pytest.mark.parametrize(("who", "pn"), [
    ({"sub": "u1", "given_name": "Ada", "family_name": "Lovelace", "name": "x"}, "Lovelace^Ada"),
    ({"sub": "u1", "name": "Demo Radiologist"}, "Radiologist^Demo"),
    ({"sub": "radiologist"}, "radiologist^"),  # a family name alone keeps its caret
    ({"sub": "u1", "family_name": "O^Brien=x\\y"}, "O Brien x y^"),  # no PN delimiters inside
])
def test_the_creator_is_a_person_name(who: dict, pn: str) -> None:
    assert person_name(who) == pn
    assert len(person_name({"sub": "u", "given_name": "g" * 80, "family_name": "f" * 80})) <= 64


def test_a_person_name_reads_as_people_write_it() -> None:
    assert person("Lovelace^Ada") == "Lovelace, Ada"
    assert person("Lovelace") == "Lovelace"
    assert person("Lovelace^Ada^^Dr=ラブレス") == "Lovelace, Ada"
    assert person("") is None
