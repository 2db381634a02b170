"""Cohort definitions: a small, versioned JSON filter language over catalog series.

A definition means the same thing at every site: fields come from a fixed vocabulary (below,
with units), text matching is case-insensitive, DICOM code strings are upper-case, dates are ISO
``YYYY-MM-DD``. Its content hash is taken over the canonical form (keys sorted, values
normalized, the children of ``all``/``any`` sorted), so two sites that hold the same definition
compute the same hash, and a federated study can name exactly the cohort it used.

Example::

    {"version": 1, "where": {"all": [
        {"field": "modality", "op": "eq", "value": "CT"},
        {"field": "slice_thickness", "op": "lte", "value": 5},
        {"field": "study_date", "op": "between", "value": ["2020-01-01", "2024-12-31"]},
        {"any": [{"field": "manufacturer", "op": "contains", "value": "siemens"},
                 {"field": "manufacturer", "op": "contains", "value": "ge "}]},
        {"not": {"has_result": "SEG"}}]}}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import date
from typing import Any

from radflow.errors import ConfigurationError
from radflow.hashing import canonical_json, digest

VERSION = 1


@dataclass(frozen=True)
class FieldSpec:
    kind: str  # code, text, number, date, bool
    description: str


FIELDS: dict[str, FieldSpec] = {
    "modality": FieldSpec("code", "DICOM Modality (CT, MR, SEG, SR...)"),
    "body_part": FieldSpec("code", "BodyPartExamined (ABDOMEN, CHEST...)"),
    "patient_sex": FieldSpec("code", "PatientSex (F, M, O)"),
    "manufacturer": FieldSpec("text", "scanner Manufacturer"),
    "model": FieldSpec("text", "ManufacturerModelName"),
    "series_description": FieldSpec("text", "SeriesDescription"),
    "protocol_name": FieldSpec("text", "ProtocolName"),
    "contrast_agent": FieldSpec("text", "ContrastBolusAgent"),
    "status": FieldSpec("text", "worst finding of the series: ok, warning, error"),
    "finding": FieldSpec("text", "a finding's code on the series (missing_slices, "
                                 "missing_tag...); ne and not_in: no such finding"),
    "field_strength": FieldSpec("number", "MagneticFieldStrength, tesla"),
    "kvp": FieldSpec("number", "KVP, kilovolts"),
    "slice_thickness": FieldSpec("number", "SliceThickness, mm"),
    "pixel_spacing": FieldSpec("number", "PixelSpacing (row), mm"),
    "slice_spacing": FieldSpec("number", "median distance between slices, mm"),
    "rows": FieldSpec("number", "Rows, pixels"),
    "columns": FieldSpec("number", "Columns, pixels"),
    "num_instances": FieldSpec("number", "instances in the series"),
    "missing_slices": FieldSpec("number", "slices missing from an evenly spaced volume"),
    "age_years": FieldSpec("number", "patient age at the study, years"),
    "study_date": FieldSpec("date", "StudyDate, YYYY-MM-DD"),
    "contrast": FieldSpec("bool", "a contrast agent was given"),
    "uniform_spacing": FieldSpec("bool", "slices evenly spaced, none missing"),
    "geometry_consistent": FieldSpec("bool", "one orientation and one grid for all slices"),
}
OPS: dict[str, set[str]] = {
    "code": {"eq", "ne", "in", "not_in", "exists"},
    "text": {"eq", "ne", "in", "not_in", "contains", "exists"},
    "number": {"eq", "ne", "lt", "lte", "gt", "gte", "between", "in", "exists"},
    "date": {"eq", "lt", "lte", "gt", "gte", "between", "exists"},
    "bool": {"eq", "exists"},
}
RESULT_MODALITY = re.compile(r"^[A-Z][A-Z0-9]{1,15}$")


def _bad(message: str) -> ConfigurationError:
    return ConfigurationError(
        f"invalid cohort definition: {message}",
        fix="see `radflow cohort fields` for the fields, their operators and value types",
    )


def _scalar(field: str, kind: str, value: Any) -> Any:
    """Normalize one value of a field's kind (the canonical form)."""
    if kind == "code":
        if not isinstance(value, str) or not value.strip():
            raise _bad(f"{field} takes a text code, got {value!r}")
        return value.strip().upper()
    if kind == "text":
        if not isinstance(value, str):
            raise _bad(f"{field} takes text, got {value!r}")
        return value.strip().casefold()
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _bad(f"{field} takes a number, got {value!r}")
        return float(value)
    if kind == "date":
        try:
            return date.fromisoformat(str(value)).isoformat()
        except ValueError as exc:
            raise _bad(f"{field} takes a date YYYY-MM-DD, got {value!r}") from exc
    if not isinstance(value, bool):
        raise _bad(f"{field} takes true or false, got {value!r}")
    return value


def _condition(node: dict[str, Any]) -> dict[str, Any]:
    field, op = node.get("field"), node.get("op")
    if field not in FIELDS:
        raise _bad(f"unknown field {field!r}; known: {', '.join(sorted(FIELDS))}")
    kind = FIELDS[field].kind
    if op not in OPS[kind]:
        raise _bad(f"operator {op!r} does not apply to {field} ({kind}); use one of "
                   f"{', '.join(sorted(OPS[kind]))}")
    extra = set(node) - {"field", "op", "value"}
    if extra:
        raise _bad(f"unexpected key(s) {sorted(extra)} in condition on {field}")
    value = node.get("value")
    if op == "exists":
        norm: Any = True if value is None else bool(value)
    elif op in ("in", "not_in"):
        if not isinstance(value, list) or not value:
            raise _bad(f"{op} on {field} takes a non-empty list")
        norm = sorted({_scalar(field, kind, v) for v in value}, key=str)
    elif op == "between":
        if not isinstance(value, list) or len(value) != 2:
            raise _bad(f"between on {field} takes [low, high]")
        norm = [_scalar(field, kind, v) for v in value]
        if norm[0] > norm[1]:
            raise _bad(f"between on {field}: low {value[0]!r} is above high {value[1]!r}")
    else:
        norm = _scalar(field, kind, value)
    return {"field": field, "op": op, "value": norm}


def normalize(node: Any) -> dict[str, Any]:
    """Validate a filter node and return its canonical form."""
    if not isinstance(node, dict) or not node:
        raise _bad(f"a filter node must be a JSON object, got {node!r}")
    if "field" in node:
        return _condition(node)
    if len(node) != 1:
        raise _bad(f"a filter node has one key (all, any, not, has_result), got {sorted(node)}")
    key, value = next(iter(node.items()))
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise _bad(f"{key} takes a non-empty list of filters")
        children = {json.dumps(c, sort_keys=True): c for c in map(normalize, value)}
        if len(children) == 1:  # all/any of one filter is that filter: same meaning, same hash
            return next(iter(children.values()))
        return {key: [children[k] for k in sorted(children)]}
    if key == "not":
        return {"not": normalize(value)}
    if key == "has_result":
        if not isinstance(value, str) or not RESULT_MODALITY.match(value.strip().upper()):
            raise _bad(f"has_result takes the kind of a derived object (SEG, SR...), got {value!r}")
        return {"has_result": value.strip().upper()}
    raise _bad(f"unknown filter key {key!r} (use field/op/value, all, any, not, has_result)")


@dataclass(frozen=True)
class CohortDefinition:
    """A validated, canonical cohort definition."""

    where: dict[str, Any]
    version: int = VERSION

    @classmethod
    def parse(cls, data: dict[str, Any] | str) -> CohortDefinition:
        """From a dict or JSON text: ``{"version": 1, "where": {...}}`` (or a bare filter)."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except json.JSONDecodeError as exc:
                raise _bad(f"not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise _bad("a definition is a JSON object")
        if "where" not in data:
            data = {"version": VERSION, "where": data}
        version = data.get("version", VERSION)
        if version != VERSION:
            raise _bad(f"version {version!r} is not supported by this radflow (it reads {VERSION})")
        extra = set(data) - {"version", "where", "level"}
        if extra or data.get("level", "series") != "series":
            raise _bad(f"unexpected keys {sorted(extra)} or level (only 'series' is defined)")
        return cls(where=normalize(data["where"]))

    def canonical(self) -> dict[str, Any]:
        return {"level": "series", "version": self.version, "where": self.where}

    def canonical_json(self) -> str:
        return canonical_json(self.canonical())

    @property
    def content_hash(self) -> str:
        """``sha256:<hex>`` of the canonical JSON: the same at every site."""
        return digest(self.canonical())


_SHORT = re.compile(r"^\s*([a-z_]+)\s*(<=|>=|!=|=|<|>|~)\s*(.+?)\s*$")
_SHORT_OPS = {"=": "eq", "!=": "ne", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte", "~": "contains"}


def parse_short(filters: list[str]) -> CohortDefinition:
    """``["modality=CT", "slice_thickness<=5", "manufacturer~siemens"]`` -> a definition (all of
    them must hold). Values are read as numbers, dates, booleans or text by the field's kind."""
    conditions = []
    for item in filters:
        m = _SHORT.match(item)
        if not m:
            raise _bad(f"{item!r} is not FIELD OP VALUE (ops: = != < <= > >= ~)")
        field, op, raw = m.groups()
        kind = FIELDS[field].kind if field in FIELDS else "text"
        value: Any = raw
        if kind == "number":
            try:
                value = float(raw)
            except ValueError:
                pass
        elif kind == "bool":
            value = {"true": True, "yes": True, "false": False, "no": False}.get(raw.lower(), raw)
        conditions.append({"field": field, "op": _SHORT_OPS[op], "value": value})
    if not conditions:
        raise _bad("no filter given")
    return CohortDefinition.parse({"where": {"all": conditions}})


_WORDS = {"eq": "=", "ne": "≠", "lt": "<", "lte": "≤", "gt": ">", "gte": "≥", "in": "in",
          "not_in": "not in", "contains": "contains", "between": "between"}


def in_words(node: dict[str, Any] | None) -> str:
    """A (canonical) filter as a person reads it: ``modality = CT and age_years ≥ 60``."""
    if not node:
        return "every series"
    if "field" in node:
        op, value = node["op"], node["value"]
        if op == "exists":
            return f"{node['field']} {'is given' if value else 'is missing'}"
        def word(v: Any) -> str:
            return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)

        if op == "between":
            return f"{node['field']} between {word(value[0])} and {word(value[1])}"
        shown = ", ".join(word(v) for v in value) if isinstance(value, list) else word(value)
        return f"{node['field']} {_WORDS.get(op, op)} {shown}"
    key, value = next(iter(node.items()))
    if key in ("all", "any"):
        parts = [in_words(v) for v in value]
        if not parts:
            return "every series" if key == "all" else "no series"
        joined = f" {'and' if key == 'all' else 'or'} ".join(parts)
        return joined if key == "all" or len(parts) == 1 else f"({joined})"
    if key == "not":
        return f"not ({in_words(value)})"
    return f"has a {value}"
