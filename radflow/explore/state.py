"""The dashboard's filter state: its facets, what a bucket of each means in the cohort
language, and the cohort definition that a state is.

A filter state is a mapping facet -> chosen bucket keys (a URL's query string:
``?modality=CT&age=60&study_year=2021``). Every bucket stands for a condition of the cohort
language (``modality eq CT``, ``age_years gte 60`` and ``lt 70``, ``study_date between
2021-01-01 and 2021-12-31``), so a dashboard view *is* a cohort definition: the same JSON, the
same hash, savable from the cohort builder. Several buckets of one facet are alternatives: one
``in`` condition for codes and numbers (``modality in [CT, MR]``), one range for adjacent bins
(``age_years gte 60 and lt 80``), ``any`` only for bins apart. Facets combine with ``all``.

The dashboard counts image series (:mod:`radflow.cohorts.images`): a state's definition holds
the image-series rule unless the state shows derived objects too (``?derived=1``, the switch
"show derived objects"). The scanner facets (manufacturer, model) count image series in either
case: a SEG's "manufacturer" is the software that wrote it, not a scanner.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import col

from radflow.catalog.models import Finding, Series
from radflow.catalog.models.mirror import AGE_STEP, THICKNESS_EDGES, bucket_expression
from radflow.cohorts.definition import CohortDefinition
from radflow.cohorts.images import images_only
from radflow.errors import ConfigurationError

DERIVED = "derived"  # the switch in the address: ?derived=1 counts derived objects too
SWITCH_ON = ("1", "true", "on", "yes")


class Bucket(ColumnElement[Any]):
    """A facet's bucket expression, written for the database it runs on."""

    inherit_cache = True

    def __init__(self, key: str) -> None:
        self.key = key


@compiles(Bucket)
def _bucket(element: Bucket, compiler: Any, **_kw: Any) -> str:
    return bucket_expression(element.key, compiler.dialect.name)


def bucket_sql(key: str) -> ColumnElement[Any]:
    return Bucket(key)


def _range_condition(field: str, edges: tuple[float, ...]) -> Callable[[str], dict[str, Any]]:
    def condition(key: str) -> dict[str, Any]:
        low = float(key)
        upper = [e for e in edges if e > low]
        parts = [{"field": field, "op": "gte", "value": low}]
        if upper:
            parts.append({"field": field, "op": "lt", "value": upper[0]})
        return {"all": parts}
    return condition


def _range_label(edges: tuple[float, ...], unit: str) -> Callable[[str], str]:
    def label(key: str) -> str:
        low = float(key)
        upper = [e for e in edges if e > low]
        return f"{low:g}–{upper[0]:g} {unit}" if upper else f"≥ {low:g} {unit}"
    return label


def _number_key(value: Any) -> str:
    return f"{float(value):g}"


@dataclass(frozen=True)
class Facet:
    """One chart: its SQL bucket expression, how a bucket key becomes a cohort condition, and
    how it is labelled. ``ordered`` facets (dates, bins) keep their order; the others are sorted
    by count."""

    key: str
    title: str
    bucket: Callable[[], ColumnElement[Any]]
    condition: Callable[[str], dict[str, Any]]
    label: Callable[[str], str] = str
    to_key: Callable[[Any], str] = str
    ordered: bool = False
    join_findings: bool = False
    scanner: bool = False  # counts image series only, even with derived objects shown


def _code(field: str) -> Callable[[str], dict[str, Any]]:
    return lambda key: {"field": field, "op": "eq", "value": key}


def _number(field: str) -> Callable[[str], dict[str, Any]]:
    return lambda key: {"field": field, "op": "eq", "value": float(key)}


FACETS: tuple[Facet, ...] = (
    Facet("modality", "Modality", lambda: col(Series.modality), _code("modality")),
    Facet("body_part", "Body part", lambda: col(Series.body_part), _code("body_part")),
    Facet("manufacturer", "Manufacturer", lambda: bucket_sql("manufacturer"),
          lambda k: {"field": "manufacturer", "op": "eq", "value": k}, scanner=True),
    Facet("model", "Scanner model", lambda: bucket_sql("model"),
          lambda k: {"field": "model", "op": "eq", "value": k}, scanner=True),
    Facet("field_strength", "Field strength (MR)", lambda: bucket_sql("field_strength"),
          _number("field_strength"), lambda k: f"{k} T", _number_key, ordered=True),
    Facet("kvp", "kVp (CT)", lambda: bucket_sql("kvp"), _number("kvp"),
          lambda k: f"{k} kV", _number_key, ordered=True),
    Facet("slice_thickness", "Slice thickness",
          lambda: bucket_sql("slice_thickness"),
          _range_condition("slice_thickness", THICKNESS_EDGES),
          _range_label(THICKNESS_EDGES, "mm"), _number_key, ordered=True),
    Facet("slice_spacing", "Slice spacing",
          lambda: bucket_sql("slice_spacing"),
          _range_condition("slice_spacing", THICKNESS_EDGES),
          _range_label(THICKNESS_EDGES, "mm"), _number_key, ordered=True),
    Facet("study_year", "Study date (year)",
          lambda: bucket_sql("study_year"),
          lambda k: {"field": "study_date", "op": "between",
                     "value": [f"{int(k):04d}-01-01", f"{int(k):04d}-12-31"]},
          to_key=lambda v: str(int(v)), ordered=True),
    Facet("age", "Age at study",
          lambda: bucket_sql("age"),
          lambda k: {"all": [{"field": "age_years", "op": "gte", "value": float(k)},
                             {"field": "age_years", "op": "lt", "value": float(k) + AGE_STEP}]},
          lambda k: f"{int(float(k))}–{int(float(k)) + AGE_STEP - 1} y",
          lambda v: str(int(v)), ordered=True),
    Facet("patient_sex", "Sex", lambda: bucket_sql("patient_sex"), _code("patient_sex")),
    Facet("status", "Series status", lambda: bucket_sql("status"),
          lambda k: {"field": "status", "op": "eq", "value": k},
          to_key=lambda v: getattr(v, "value", str(v))),
    Facet("finding", "Findings", lambda: col(Finding.code),
          lambda k: {"field": "finding", "op": "eq", "value": k}, join_findings=True),
)
BY_KEY = {f.key: f for f in FACETS}


def parse_state(query: Mapping[str, list[str]]) -> dict[str, list[str]]:
    """The filter state of a query string (facet -> bucket keys, and ``derived`` when the
    switch is on); unknown names are ignored, bad bucket keys refused.

    Raises:
        ConfigurationError: a bucket key that is no value of its facet (e.g. ``age=old``).
    """
    state: dict[str, list[str]] = {}
    for key, values in query.items():
        if key == DERIVED:
            if any(v.strip().lower() in SWITCH_ON for v in values):
                state[DERIVED] = ["1"]
            continue
        if key not in BY_KEY:
            continue
        kept = sorted({v for v in values if v != ""})
        for value in kept:
            try:
                CohortDefinition.parse({"where": BY_KEY[key].condition(value)})
            except (ValueError, ConfigurationError) as exc:
                raise ConfigurationError(f"the dashboard filter {key}={value!r} is not valid",
                                         fix="remove it from the address, or click the "
                                             "facets again") from exc
        if kept:
            state[key] = kept
    return state


def shows_derived(state: Mapping[str, list[str]]) -> bool:
    """Whether the state counts derived objects (SEG, SR...) beside image series."""
    return DERIVED in state


def _interval(condition: dict[str, Any]) -> tuple[str, Any, Any] | None:
    """A bin's condition as (field, low, high): numbers [low, high) (high None: open), dates
    [low, high] both included; None for a condition that is no bin."""
    if condition.get("op") == "between":
        low, high = condition["value"]
        return condition["field"], date.fromisoformat(low), date.fromisoformat(high)
    parts = condition.get("all")
    if not parts or parts[0].get("op") != "gte":
        return None
    high = parts[1]["value"] if len(parts) > 1 and parts[1].get("op") == "lt" else None
    return parts[0]["field"], parts[0]["value"], high


def _bin(field: str, low: Any, high: Any) -> dict[str, Any]:
    if isinstance(low, date):
        return {"field": field, "op": "between", "value": [low.isoformat(), high.isoformat()]}
    parts = [{"field": field, "op": "gte", "value": low}]
    if high is not None:
        parts.append({"field": field, "op": "lt", "value": high})
    return {"all": parts}


def merged(conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Several buckets of one facet as few conditions: values as one ``in``, adjacent bins as
    one range (a bin's end is the next one's start; a year's last day the day before the next
    year's first); what remains apart stays apart (``any`` of them)."""
    if len(conditions) < 2:
        return conditions
    if all(c.get("op") == "eq" for c in conditions):
        return [{"field": conditions[0]["field"], "op": "in",
                 "value": sorted({c["value"] for c in conditions}, key=str)}]
    spans = [_interval(c) for c in conditions]
    if any(s is None for s in spans):
        return conditions
    spans.sort(key=lambda s: s[1])
    out = [list(spans[0])]
    for field, low, high in spans[1:]:
        last = out[-1]
        touches = last[2] is not None and (
            last[2] + timedelta(days=1) == low if isinstance(low, date) else last[2] == low)
        if touches:
            last[2] = high
        else:
            out.append([field, low, high])
    return [_bin(*span) for span in out]


def _filters(state: Mapping[str, list[str]], without: str | None) -> dict[str, Any] | None:
    parts = []
    for key, values in sorted(state.items()):
        if key in (without, DERIVED):
            continue
        conditions = merged([BY_KEY[key].condition(v) for v in values])
        if len(conditions) > 1:
            parts.append({"any": conditions})
        elif "all" in conditions[0]:  # a bin's two bounds join the other conditions
            parts.extend(conditions[0]["all"])
        else:
            parts.append(conditions[0])
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else {"all": parts}


def where_of(state: Mapping[str, list[str]], without: str | None = None,
             scanner: bool = False) -> dict[str, Any] | None:
    """The cohort filter of a state (``without`` one facet's own choice), or None for every
    series. It keeps to image series unless the state shows derived objects; ``scanner``: a
    scanner facet's filter, which keeps to image series in either case."""
    where = _filters(state, without)
    if scanner or not shows_derived(state):
        return images_only(where)
    return where


def definition_of(state: Mapping[str, list[str]]) -> CohortDefinition | None:
    """The state as a cohort definition (the builder's starting point), None for every
    series (derived objects shown, no filter)."""
    where = where_of(state)
    return CohortDefinition.parse({"where": where}) if where else None


def chips(state: Mapping[str, list[str]]) -> list[dict[str, str]]:
    """The active filters as removable chips: facet title, bucket label, and the state without
    that bucket (its link); the derived switch too when it is on."""
    out = []
    for key, values in sorted(state.items()):
        if key == DERIVED:
            out.append({"facet": "Derived objects", "label": "shown", "key": key,
                        "value": "1"})
            continue
        facet = BY_KEY[key]
        for value in values:
            out.append({"facet": facet.title, "label": facet.label(value), "key": key,
                        "value": value})
    return out
