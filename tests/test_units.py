"""Numbers and units as the web pages write them (radflow.explore.units): pure logic."""

from __future__ import annotations

import pytest

from radflow.explore.units import number, show, unit


@pytest.mark.parametrize(("value", "ucum", "expected"), [
    (1124770.0, "mm3", ("1,125", "mL")),  # a liver: not 1.12477e+06 mm³
    (61.4, "[hnsf'U]", ("61.4", "HU")),
    (-12.25, "[hnsf'U]", ("-12.25", "HU")),
    (6.48286e10, "[hnsf'U]2", ("64,828,600,000", "HU²")),
    (123.456, "mm", ("123.5", "mm")),
    (0.703125, "mm", ("0.7031", "mm")),
    (2.0, "1", ("2", "")),
    (0.5, "bit", ("0.5", "bits")),
    (3.2e-5, "1", ("3.20 × 10⁻⁵", "")),
    (None, "mm3", ("–", "mL")),
    (7.0, "m/s", ("7", "m/s")),  # a code it does not know: as it is
])
def test_values_are_written_for_people(value, ucum, expected) -> None:
    assert show(value, ucum) == expected


def test_no_exponent_for_numbers_a_person_meets() -> None:
    for value in (1e6, 123456789.0, 0.001234, 99999.5, 12.0):
        assert "e" not in number(value)
    assert unit("[hnsf'U]") == "HU" and unit(None) == "" and number(float("nan")) == "not a number"
