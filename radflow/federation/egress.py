"""The egress gate: every release of a site passes here, and leaves only as the site's policy
allows. It checks the release against the flow version's release schema (exactly those fields,
of those kinds and shapes) and the site policy, suppresses small cells, and otherwise refuses
with a code that reveals nothing about the data.

    result = gate(release, schema, policy)
    if result.ok: post(result.released)        # suppressed cells are None; result.suppressed
    else: report(result.refusal)               # e.g. "policy_violation:min_cohort"

Refusal codes: ``policy_violation:<rule>`` with rule one of ``schema``, ``min_cohort``,
``free_text``, ``identifier``, ``shape``, ``weights``, ``per_case``, ``min_cell`` (a small count
that other fields would reveal), ``coarse`` (a span with
more than two significant digits), ``parameters`` (a model with more parameters than the
policy's ``max_parameters_ratio`` allows for the site's n).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from radflow.federation.policy import SitePolicy
from radflow.federation.release import ReleaseField, ReleaseSchema

# What must never leave, whatever the schema says: DICOM UIDs, dates and times, DICOM person
# names, long digit runs (patient IDs, accession numbers), e-mail addresses.
IDENTIFIERS = (
    re.compile(r"\b\d+(\.\d+){3,}\b"),                       # a UID
    re.compile(r"\b(19|20)\d{2}-?(0[1-9]|1[0-2])-?(0[1-9]|[12]\d|3[01])\b"),  # a date
    re.compile(r"\b\d{1,2}:\d{2}(:\d{2})?\b"),               # a time
    re.compile(r"\^"),                                       # a DICOM person name
    re.compile(r"\d{5,}"),                                   # an ID
    re.compile(r"[^@\s]+@[^@\s]+\.[a-z]{2,}", re.I),         # an e-mail address
)


class Refused(Exception):
    """The gate's outcome for a release that may not leave (not a program error)."""

    def __init__(self, rule: str, detail: str | None = None) -> None:
        super().__init__(rule)
        self.code = f"policy_violation:{rule}"
        self.detail = detail  # for the site's own log and audit trail, never for the hub


@dataclass(frozen=True)
class GateResult:
    """What may leave (``released``), or why nothing does (``refusal``)."""

    released: dict[str, Any] | None
    refusal: str | None = None
    suppressed: list[str] = field(default_factory=list)
    detail: str | None = None  # which field broke which rule: stays at the site

    @property
    def ok(self) -> bool:
        return self.refusal is None


def looks_identifying(text: str) -> bool:
    """Whether a string looks like a UID, a date, a time, a person name, an ID or an e-mail."""
    return any(p.search(text) for p in IDENTIFIERS)


def gate(release: Any, schema: ReleaseSchema, policy: SitePolicy,
         params: dict[str, Any] | None = None) -> GateResult:
    """Check one release of a job with ``params`` (they size named dimensions and pick the
    round); never raises for bad data (a refusal is a result)."""
    try:
        return _gate(release, schema, policy, params or {})
    except Refused as exc:
        return GateResult(None, exc.code, detail=exc.detail)


def _gate(release: Any, schema: ReleaseSchema, policy: SitePolicy,
          params: dict[str, Any]) -> GateResult:
    try:
        schema = schema.for_round(params.get("round"))
    except ValueError:
        raise Refused("schema") from None
    for spec in schema.fields.values():  # the schema itself must not carry identifiers
        if any(looks_identifying(v) for v in spec.values):
            raise Refused("identifier")
    if not isinstance(release, dict):
        raise Refused("schema")
    for key in release:
        if not isinstance(key, str) or looks_identifying(key):
            raise Refused("identifier")
    if set(release) != set(schema.fields):
        raise Refused("schema", f"fields missing: {sorted(set(schema.fields) - set(release))}, "
                                f"not declared: {sorted(set(release) - set(schema.fields))}")
    shapes: dict[str, tuple[int, ...]] = {}
    for name, spec in schema.fields.items():
        try:
            shapes[name] = spec.resolved(params)
        except ValueError as exc:
            raise Refused("shape", f"{name}: {exc}") from None
    out: dict[str, Any] = {}
    for name, spec in schema.fields.items():
        try:
            out[name] = _field(release[name], spec, shapes[name], policy)
        except Refused as exc:
            exc.detail = exc.detail or f"field {name!r} ({spec.kind}, shape {shapes[name]})"
            raise
    n = out[schema.cohort_field]
    if n < policy.min_cohort:
        raise Refused("min_cohort", f"n = {n}, the policy's min_cohort is {policy.min_cohort}")
    parameters = params.get("parameters")
    if isinstance(parameters, int) and parameters > policy.max_parameters_ratio * n:
        raise Refused("parameters", f"{parameters} parameters for n = {n} (at most "
                                    f"{policy.max_parameters_ratio} n)")
    suppressed: list[str] = []
    for name, spec in schema.fields.items():
        if spec.kind in ("matrix", "weights") and shapes[name] and \
                isinstance(spec.shape[0], int) and shapes[name][0] >= n:
            # as many rows as cases: could be one per case (a dimension the job's parameters
            # size, e.g. one row per feature, is the coordinator's choice, not the data's)
            raise Refused("per_case")
        if spec.kind == "count" and name != schema.cohort_field and 0 <= out[name] < \
                policy.min_cell and spec.small == "refuse":
            raise Refused("min_cell")  # other fields would reveal this small count
        if spec.kind == "count" and name != schema.cohort_field and 0 < out[name] < policy.min_cell:
            out[name] = None
            suppressed.append(name)
        elif spec.kind == "histogram":
            out[name], cells = _suppress_cells(out[name], policy.min_cell)
            suppressed += [f"{name}{_index(i)}" for i in cells]
    for name, spec in schema.fields.items():  # a sum over a suppressed count goes with it
        if spec.counted_by is not None:
            out[name] = _blank_like(out[name], out[spec.counted_by])
    return GateResult(out, None, suppressed)


def _index(path: tuple[int, ...]) -> str:
    return "".join(f"[{i}]" for i in path)


def _suppress_cells(value: list[Any], min_cell: int,
                    path: tuple[int, ...] = ()) -> tuple[list[Any], list[tuple[int, ...]]]:
    """Small-cell suppression of each innermost row of a histogram (of any dimension)."""
    if value and isinstance(value[0], list):
        rows, cells = [], []
        for i, row in enumerate(value):
            done, found = _suppress_cells(row, min_cell, (*path, i))
            rows.append(done)
            cells += found
        return rows, cells
    done, found = _suppress_histogram(value, min_cell)
    return done, [(*path, i) for i in found]


def _blank_like(value: Any, counts: Any) -> Any:
    if isinstance(counts, list):
        return [_blank_like(v, c) for v, c in zip(value, counts, strict=True)]
    return None if counts is None else value


def _field(value: Any, spec: ReleaseField, shape: tuple[int, ...], policy: SitePolicy) -> Any:
    if spec.kind == "enum":
        if not isinstance(value, str):
            raise Refused("schema")
        if looks_identifying(value):
            raise Refused("identifier")
        if value not in spec.values:
            raise Refused("free_text")
        return value
    if spec.kind == "weights" and not policy.allow_weights:
        raise Refused("weights")
    integer = spec.kind in ("count", "histogram")
    checked = _array(value, shape, integer)
    if spec.kind == "coarse":
        from radflow.federation.stats import is_coarse

        def check(v: Any) -> None:
            if isinstance(v, list):
                for item in v:
                    check(item)
            elif not is_coarse(v):
                raise Refused("coarse")

        check(checked)
    return checked


def _array(value: Any, shape: tuple[int, ...], integer: bool) -> Any:
    if shape:
        if not isinstance(value, list) or len(value) != shape[0]:
            raise Refused("shape")
        return [_array(v, shape[1:], integer) for v in value]
    if isinstance(value, str):
        raise Refused("identifier" if looks_identifying(value) else "free_text")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused("shape" if isinstance(value, list | dict) else "schema")
    if integer and (not isinstance(value, int) or value < 0):
        raise Refused("schema")
    if not integer and not math.isfinite(value):
        raise Refused("schema")
    return value


def _suppress_histogram(bins: list[Any], min_cell: int) -> tuple[list[Any], list[int]]:
    """Bins under ``min_cell`` (and above 0) become None. Complementary suppression: with the
    cohort size released, one suppressed bin could be recomputed from the others, so the
    smallest other non-zero bin is suppressed with it."""
    flat = list(bins)
    cells = [i for i, v in enumerate(flat) if isinstance(v, int) and 0 < v < min_cell]
    if len(cells) == 1:
        others = [(v, i) for i, v in enumerate(flat) if i not in cells and isinstance(v, int)
                  and v > 0]
        if others:
            cells.append(min(others)[1])
    for i in cells:
        flat[i] = None
    return flat, sorted(cells)
