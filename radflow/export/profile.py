"""The attribute rules of PS3.15 Annex E (the Basic Application Level Confidentiality Profile,
Table E.1-1) and the options a project chooses, read from maintained packages rather than
written by hand here:

- the basic profile's action per attribute comes from ``dicom-anonymizer`` (Kitware's; its
  ``dicomfields_2026c`` is generated from the standard's 2026c edition, 655 attributes);
- the option columns (which attributes an option keeps, ``K``, or cleans, ``C``) come from
  ``dicom-standard``, the standard's own tables parsed to JSON (its edition predates 2026c:
  an attribute the newer edition added gets its basic action and no option).

Actions, in the standard's letters: ``D`` a dummy value, ``Z`` zero length (or a dummy),
``X`` removed, ``K`` kept, ``C`` cleaned, ``U`` a UID replaced consistently. A combination
(``X/Z``, ``X/D``, ``Z/D``, ``X/Z/D``, ``X/Z/U*``) depends on the attribute's type in the IOD;
without the IOD at hand radflow takes the combination's last letter, which is valid for every
type (a dummy or empty value is allowed where removal would be, not the other way round).
"""

from __future__ import annotations

import json
import os
import sysconfig
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from radflow.errors import ConfigurationError

# the options of Table E.1-1 a project can choose, by radflow's name -> the column
OPTIONS: dict[str, str] = {
    "retain-longitudinal-modified-dates": "rtnLongModifDatesOpt",
    "retain-patient-characteristics": "rtnPatCharsOpt",
    "retain-device-identity": "rtnDevIdOpt",
    "retain-institution-identity": "rtnInstIdOpt",
    "clean-descriptors": "cleanDescOpt",
    "clean-structured-content": "cleanStructContOpt",
}
# CID 7050 (De-identification Method): the profile and each option, for the exported files
OPTION_CODES: dict[str, tuple[str, str]] = {
    "basic": ("113100", "Basic Application Confidentiality Profile"),
    "clean-pixel-data": ("113101", "Clean Pixel Data Option"),
    "clean-structured-content": ("113104", "Clean Structured Content Option"),
    "clean-descriptors": ("113105", "Clean Descriptors Option"),
    "retain-longitudinal-modified-dates": (
        "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "retain-patient-characteristics": ("113108", "Retain Patient Characteristics Option"),
    "retain-device-identity": ("113109", "Retain Device Identity Option"),
    "retain-institution-identity": ("113112", "Retain Institution Identity Option"),
    "retain-safe-private": ("113111", "Retain Safe Private Option"),
}
PROFILES = ("basic",)
_LISTS = {"D_TAGS": "D", "Z_TAGS": "Z", "X_TAGS": "X", "U_TAGS": "U", "Z_D_TAGS": "Z/D",
          "X_Z_TAGS": "X/Z", "X_D_TAGS": "X/D", "X_Z_D_TAGS": "X/Z/D", "X_Z_U_STAR_TAGS": "X/Z/U*"}


@dataclass(frozen=True)
class Rule:
    """What the profile (with the chosen options) does to one attribute."""

    action: str  # one letter: D, Z, X, K, C or U
    basic: str  # the basic profile's entry as the standard writes it
    why: str  # "basic profile" or the option that changed it


def standard_table_path() -> Path:
    """Where ``dicom-standard`` put its JSON of Table E.1-1."""
    path = Path(sysconfig.get_path("data")) / "standard" / "confidentiality_profile_attributes.json"
    if not path.is_file():
        raise ConfigurationError(f"the standard's confidentiality table is missing ({path})",
                                 fix="install the package dicom-standard (make setup does)")
    return path


@cache
def standard_table() -> dict[str, dict[str, str]]:
    """Table E.1-1 as ``dicom-standard`` parsed it: ``"00100010"`` -> its row (the repeating
    groups keep their ``xx`` ids: ``"60xx3000"``)."""
    rows = json.loads(standard_table_path().read_text())
    return {row["id"].lower(): row for row in rows}


@cache
def basic_actions() -> dict[int, str]:
    """Tag (as an int) -> the basic profile's entry, from dicom-anonymizer's newest table."""
    from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table

    actions: dict[int, str] = {}
    for name, action in _LISTS.items():
        for entry in getattr(table, name):
            if len(entry) == 2:  # (group, element, masks): curves and overlays, by group
                actions[(entry[0] << 16) | entry[1]] = action
    return actions


def check_options(options: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """``options`` in a canonical order, each checked against the names radflow knows."""
    unknown = [o for o in options if o not in OPTIONS]
    if unknown:
        raise ConfigurationError(f"unknown de-identification option(s) {unknown}",
                                 fix=f"choose from: {', '.join(OPTIONS)}")
    return tuple(o for o in OPTIONS if o in options)


class Profile:
    """The rules for one choice of options; ``rule(tag)`` is None for an attribute the table
    does not list (kept, apart from the safety nets of :mod:`radflow.export.deidentify`)."""

    def __init__(self, options: list[str] | tuple[str, ...] = ()) -> None:
        self.options = check_options(options)
        self._rules: dict[int, Rule] = {}

    def rule(self, tag: int) -> Rule | None:
        if tag in self._rules:
            return self._rules[tag]
        basic = basic_actions().get(tag)
        row = standard_table().get(f"{tag:08x}")
        if basic is None and row is not None:
            basic = row["basicProfile"]
        if basic is None:
            return None
        action, why = basic.replace("*", "").split("/")[-1], "basic profile"
        for option in self.options:
            letter = (row or {}).get(OPTIONS[option])
            if letter == "K" or (letter == "C" and action != "K"):
                action, why = letter, option
        rule = Rule(action=action, basic=basic, why=why)
        self._rules[tag] = rule
        return rule

    @property
    def keeps_dates(self) -> bool:
        return "retain-longitudinal-modified-dates" in self.options


def data_dir_note() -> str:
    """Where the standard's tables were read from (for the manifest)."""
    return os.fspath(standard_table_path())
