"""Releases and combined results as tables a coordinator (or a site's steward) can read, the
same on the hub's study page, in the study report and on a site's Federation page
(``release_tables.html`` renders them).

    release_tables(release, params, schema)     # one site's release: counts, per cell, histograms
    combined_tables(result["combined"])         # the study's result: its tables and its scalars

A table is ``{"id", "title", "columns": [{"label", "title"}], "rows": [[cell]], "note",
"collapsed"}``; a cell is ``{"text", "sub", "cls"}`` (``cls``: ``num``, ``suppressed``).
Numbers carry their units (:mod:`radflow.federation.units`); a suppressed value says so.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from radflow.federation.units import Unit, count, feature_unit, number

AXES = {"features": "Feature", "segments": "Segment", "vendors": "Vendor",
        "parameters": "Parameter"}
# field name -> (header, power of the feature's unit: 0 a count, None no unit)
FIELDS = {"n": ("n", 0), "matching": ("matching", 0), "events": ("events", 0),
          "nonevents": ("non-events", 0), "cells": ("values", 0),
          "site_cells": ("values at the site", 0), "sums": ("sum", 1),
          "site_sums": ("sum at the site", 1), "m2": ("centred sum of squares", 2),
          "site_m2": ("centred sum of squares at the site", 2), "span_low": ("span from", 1),
          "span_high": ("span to", 1), "site_abs": ("sum of |x − site mean|", 1),
          "site_sq": ("sum of (x − site mean)²", 2),
          "vendor_abs": ("sum of |x − vendor mean|", 1),
          "vendor_sq": ("sum of (x − vendor mean)²", 2), "loglik": ("log-likelihood", None),
          "gradient": ("gradient", None), "hessian": ("Hessian", None)}
# column of a combined table -> (header, kind): count, value (feature unit), value2 (its
# square), plain (a number without unit), quantile, text
COLUMNS = {"feature": ("Feature", "text"), "segment": ("Segment", "text"),
           "n": ("n", "count"), "sites": ("Sites", "count"), "groups": ("Groups", "count"),
           "mean": ("Mean", "value"), "sd": ("SD", "value"), "variance": ("Variance", "value2"),
           "p5": ("5th percentile", "value"), "q1": ("Q1", "value"),
           "median": ("Median", "value"), "q3": ("Q3", "value"),
           "p95": ("95th percentile", "value"),
           "quantile_error_bound": ("Quantile bound ±", "value"),
           "cells_suppressed_at": ("Suppressed at", "text"),
           "quantile": ("Quantile", "quantile"), "low": ("From", "value"),
           "high": ("To", "value"), "error_bound": ("Bound ±", "value"),
           "levene_w": ("Levene's W", "plain"), "p_value": ("p", "plain"),
           "std_error": ("Std. error", "plain"), "ci_low": ("95 % CI from", "plain"),
           "ci_high": ("95 % CI to", "plain"), "max_step": ("Largest step", "plain"),
           "loglik": ("Log-likelihood", "plain")}
OPS = {"eq": "=", "ne": "≠", "lt": "<", "lte": "≤", "gt": ">", "gte": "≥", "contains": "contains",
       "in": "is one of", "not_in": "is none of", "between": "between", "exists": "is recorded"}
QUANTILE_COLUMNS = {"p5": 0.05, "q1": 0.25, "median": 0.5, "q3": 0.75, "p95": 0.95}


def cell(text: str, cls: str = "", sub: str = "") -> dict[str, str]:
    return {"text": text, "cls": cls, "sub": sub}


def value_cell(value: Any, unit: Unit | None, is_count: bool = False) -> dict[str, str]:
    """A number with its unit (a count as an integer); None as suppressed."""
    if value is None:
        return cell("suppressed", "suppressed")
    if isinstance(value, list | dict):
        return cell(json.dumps(value), "")
    if is_count:
        return cell(count(value), "num")
    if isinstance(value, bool) or not isinstance(value, int | float):
        return cell(str(value))
    return cell(unit.show(value) if unit else number(value), "num")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, dict):
        return "; ".join(f"{k}: {_text(v)}" for k, v in value.items()) or "none"
    if isinstance(value, list):
        return ", ".join(_text(v) for v in value) or "none"
    return number(value) if isinstance(value, int | float) else str(value)


# -- combined results ----------------------------------------------------------------------
def combined_tables(combined: dict[str, Any]) -> tuple[list[dict[str, Any]], list[tuple]]:
    """A study's combined result as tables (each list of rows) and (name, text) pairs; the
    pooled quantiles show their guaranteed interval under the estimate."""
    intervals = {(i["feature"], i["segment"], i["quantile"]): i
                 for i in combined.get("quantile_intervals", []) if isinstance(i, dict)}
    tables, scalars = [], []
    for key, value in combined.items():
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            tables.append(_combined_table(key, value, intervals))
        else:
            scalars.append((key.replace("_", " "), _text(value)))
    return tables, scalars


def _combined_table(key: str, rows: list[dict[str, Any]],
                    intervals: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    names = list(dict.fromkeys(k for row in rows for k in row))
    out = []
    for row in rows:
        unit = feature_unit(row["feature"]) if isinstance(row.get("feature"), str) else Unit()
        cells = []
        for name in names:
            value = row.get(name)
            kind = COLUMNS.get(name, ("", "plain" if isinstance(value, int | float)
                                      else "text"))[1]
            if kind == "text":
                cells.append(cell(_text(value)))
            elif kind == "quantile" and isinstance(value, int | float):
                cells.append(cell(f"{value * 100:g}th percentile", "num"))
            elif kind == "count" or (isinstance(value, int) and kind == "plain"):
                cells.append(value_cell(value, None, is_count=True) if value is not None
                             else cell(""))
            elif value is None:
                cells.append(cell("—", "num"))
            else:
                shown = value_cell(value, unit.power(2) if kind == "value2" else
                                   unit if kind == "value" else None)
                bound = intervals.get((row.get("feature"), row.get("segment"),
                                       QUANTILE_COLUMNS.get(name)))
                if bound is not None:
                    shown["sub"] = (f"{number(bound['low'] * unit.scale)}–"
                                    f"{number(bound['high'] * unit.scale)}")  # its interval
                cells.append(shown)
        out.append(cells)
    banded = bool(intervals) and any(n in QUANTILE_COLUMNS for n in names)
    return {"id": key.replace("_", "-"), "title": key.replace("_", " "),
            "columns": [{"label": COLUMNS.get(n, (n.replace("_", " "),))[0],
                         "title": "the estimate; under it, the interval the pooled quantile "
                                  "lies in" if banded and n in QUANTILE_COLUMNS else ""}
                        for n in names],
            "rows": out, "collapsed": key == "quantile_intervals" and bool(intervals),
            "note": "Under each pooled quantile: the interval it is guaranteed to lie in, "
                    "whatever the suppressed bins held." if banded else ""}


# -- one site's release --------------------------------------------------------------------
def _labels(axis: str | int, size: int, params: dict[str, Any]) -> list[str]:
    values = params.get(axis) if isinstance(axis, str) else None
    if isinstance(values, list) and len(values) == size:
        return [str(v) for v in values]
    terms = params.get("terms")
    if axis == "parameters" and isinstance(terms, list) and len(terms) + 1 == size:
        return ["intercept", *map(str, terms)]
    return [str(i + 1) for i in range(size)]


def _shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        value = next((v for v in value if v is not None), None)
    return shape


def _axes(name: str, value: Any, spec: Any, params: dict[str, Any]) -> list[str]:
    """The names of a field's axes: the schema's, else guessed from the job's parameters."""
    shape = _shape(value)
    if spec is not None and len(spec.shape) == len(shape):
        return [d if isinstance(d, str) else f"axis {i + 1}" for i, d in enumerate(spec.shape)]
    lists = [k for k in ("features", "segments", "vendors") if isinstance(params.get(k), list)]
    axes = []
    for i, size in enumerate(shape):
        if i == len(shape) - 1 and size == params.get("bins") and i > 0:
            axes.append("bins")
        elif i < len(lists) and len(params[lists[i]]) == size:
            axes.append(lists[i])
        elif isinstance(params.get("terms"), list) and size == len(params["terms"]) + 1:
            axes.append("parameters")
        else:
            axes.append(f"axis {i + 1}")
    return axes


def value_at(value: Any, index: tuple[int, ...]) -> Any:
    """The element of nested lists at ``index`` (None where there is none)."""
    for i in index:
        if not isinstance(value, list) or i >= len(value):
            return None
        value = value[i]
    return value


def round_schema(schema: Any, release: Any, round_name: str | None = None) -> Any:
    """The schema that applies to one release: its round's (by name, else the round whose
    fields the release holds), or the schema of a one-round flow."""
    if schema is None or not schema.rounds:
        return schema
    if round_name in schema.rounds:
        return schema.rounds[round_name]
    keys = set(release) if isinstance(release, dict) else set()
    return next((s for s in schema.rounds.values() if set(s.fields) == keys), None)


def release_tables(release: Any, params: dict[str, Any] | None = None,
                   schema: Any = None) -> list[dict[str, Any]]:
    """One site's release as tables: its counts; its values per feature and segment (and
    vendor), one column per field; its histograms (bins released, suppressed, the counts);
    a model's vectors and matrices per parameter. ``schema`` (the round's
    :class:`~radflow.federation.release.ReleaseSchema`) names the axes and kinds; without it
    they are guessed from the structure and ``params``."""
    if not isinstance(release, dict):
        return []
    params = params or {}
    fields = dict(getattr(schema, "fields", None) or {})
    scalars, groups = [], {}
    for name, value in release.items():
        spec = fields.get(name)
        axes = _axes(name, value, spec, params)
        if not axes:
            scalars.append((name, value, spec))
        else:
            groups.setdefault(tuple(axes), []).append((name, value, spec))
    tables = []
    if scalars:
        described = any(getattr(s, "description", "") for _, _, s in scalars)
        tables.append({"id": "counts", "title": "Counts", "note": "", "collapsed": False,
                       "columns": [{"label": "Field", "title": ""}, {"label": "Value", "title": ""}]
                       + ([{"label": "What it is", "title": ""}] if described else []),
                       "rows": [[cell(FIELDS.get(n, (n,))[0]), _scalar(n, v, s)]
                                + ([cell(getattr(s, "description", "") or "", "muted")]
                                   if described else [])
                                for n, v, s in scalars]})
    for axes, members in groups.items():
        tables.append(_group_table(list(axes), members, params))
    return tables


def _scalar(name: str, value: Any, spec: Any) -> dict[str, str]:
    kind = getattr(spec, "kind", None)
    is_count = kind == "count" or (kind is None and isinstance(value, int))
    return value_cell(value, None, is_count=is_count)


def _is_count(name: str, value: Any, spec: Any) -> bool:
    kind = getattr(spec, "kind", None)
    if kind is not None:
        return kind in ("count", "histogram")
    return FIELDS.get(name, ("", None))[1] == 0


def _group_table(axes: list[str], members: list[tuple], params: dict[str, Any]) -> dict:
    if axes[-1] == "bins":
        return _histogram_table(axes[:-1], members, params)
    shape = _shape(members[0][1])
    labels = [_labels(a, n, params) for a, n in zip(axes, shape, strict=False)]
    if len(members) == 1 and len(axes) == 2 and axes[0] == axes[1]:  # a square matrix
        name, value, spec = members[0]
        return {"id": name, "title": FIELDS.get(name, (name,))[0], "note": "",
                "collapsed": False,
                "columns": [{"label": "", "title": ""}] + [{"label": x, "title": ""}
                                                           for x in labels[1]],
                "rows": [[cell(label)] + [value_cell(value_at(value, (i, j)), None)
                                          for j in range(len(labels[1]))]
                         for i, label in enumerate(labels[0])]}
    rows = []
    for index in itertools.product(*(range(len(x)) for x in labels)):
        named = dict(zip(axes, (labels[a][i] for a, i in enumerate(index)), strict=True))
        unit = feature_unit(named["features"]) if "features" in named else None
        row = [cell(named[a]) for a in axes]
        for name, value, spec in members:
            power = FIELDS.get(name, ("", 1))[1]
            shown_unit = unit.power(power) if unit is not None and power else None
            row.append(value_cell(value_at(value, index), shown_unit,
                                  is_count=_is_count(name, value, spec)))
        rows.append(row)
    title = "Per " + ", ".join(AXES.get(a, a).lower() for a in axes)
    return {"id": "-".join(axes), "title": title, "note": "", "collapsed": False,
            "columns": [{"label": AXES.get(a, a), "title": ""} for a in axes]
            + [{"label": FIELDS.get(n, (n.replace("_", " "),))[0],
                "title": getattr(s, "description", "") or ""} for n, _, s in members],
            "rows": rows}


def _histogram_table(axes: list[str], members: list[tuple],
                     params: dict[str, Any]) -> dict[str, Any]:
    shape = _shape(members[0][1])
    labels = [_labels(a, n, params) for a, n in zip(axes, shape, strict=False)]
    rows = []
    for _name, value, _ in members:
        for index in itertools.product(*(range(len(x)) for x in labels)):
            counts = value_at(value, index)
            if not isinstance(counts, list):
                continue
            known = [c for c in counts if c is not None]
            hidden = len(counts) - len(known)
            rows.append([cell(labels[a][i]) for a, i in enumerate(index)] + [
                cell(count(sum(known)), "num"), cell(count(len(counts)), "num"),
                cell(count(hidden), "num suppressed" if hidden else "num"),
                cell(" ".join("×" if c is None else "·" if c == 0 else str(c)
                              for c in counts), "bins")])
    return {"id": "histograms", "title": f"Histograms ({shape[-1] if shape else 0} shared bins)",
            "collapsed": False,
            "note": "Counts per bin, low to high: · an empty bin, × a bin the site's gate "
                    "suppressed (too few values, or to protect one that was).",
            "columns": [{"label": AXES.get(a, a), "title": ""} for a in axes]
            + [{"label": "Values in released bins", "title": ""}, {"label": "Bins", "title": ""},
               {"label": "Bins suppressed", "title": ""}, {"label": "Counts", "title": ""}],
            "rows": rows}


def release_summary(release: Any) -> str:
    """A release's scalar counts in one line (``n 30 · matching 12``), for a sites table."""
    if not isinstance(release, dict):
        return ""
    return " · ".join(f"{FIELDS.get(k, (k,))[0]} {count(v) if not isinstance(v, float) else number(v)}"
                      for k, v in release.items() if not isinstance(v, list | dict))


# -- a job's parameters ------------------------------------------------------------------------
def describe_cohort(where: Any) -> str:
    """A cohort's filter in words: ``modality = CT and slice_thickness ≤ 3``."""
    if not isinstance(where, dict):
        return str(where)
    if not where:
        return "every series"
    if "field" in where:
        value = where.get("value")
        shown = ", ".join(map(str, value)) if isinstance(value, list) else value
        return f"{where['field']} {OPS.get(where.get('op'), where.get('op'))}" + (
            "" if where.get("op") == "exists" else f" {shown}")
    for key, joint in (("all", " and "), ("any", " or ")):
        if key in where:
            return joint.join(f"({describe_cohort(w)})" if len(w) == 1 and
                              ("all" in w or "any" in w) else describe_cohort(w)
                              for w in where[key])
    if "not" in where:
        return f"not ({describe_cohort(where['not'])})"
    if "has_result" in where:
        return f"has a {where['has_result']}"
    return json.dumps(where)


def params_rows(params: dict[str, Any]) -> list[tuple[str, str]]:
    """The study's parameters in words (the cohort as its filter), for a table."""
    rows = []
    for key, value in sorted(params.items()):
        if key == "cohort" and isinstance(value, dict):
            rows.append(("cohort", describe_cohort(value.get("where", value))))
        elif isinstance(value, list) and any(isinstance(v, list | dict) for v in value):
            rows.append((key, f"{len(value)} lists of values (in the JSON)"))
        else:
            rows.append((key, _text(value)))
    return rows
