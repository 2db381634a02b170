"""The egress gate: every release of a site passes here, and leaves only as the site's policy
allows. It checks the release against the flow version's release schema (exactly those fields,
of those kinds and shapes: :func:`radflow.federation.structure.check_release`, the same code the
hub runs on what it receives) and the site policy, suppresses small cells, and otherwise refuses
with a code that reveals nothing about the data.

    result = gate(release, schema, policy)
    if result.ok: post(result.released)        # suppressed cells are None; result.suppressed
    else: report(result.refusal)               # e.g. "policy_violation:min_cohort"

Refusal codes: ``policy_violation:<rule>`` with rule one of ``schema``, ``min_cohort``,
``free_text``, ``identifier``, ``shape``, ``weights``, ``per_case`` (an array of any kind with
a dimension the schema fixes at n or more), ``min_cell`` (a small count that other fields would
reveal), ``coarse`` (a span with more than two significant digits), ``parameters`` (a model
with more parameters than the policy's ``max_parameters_ratio`` allows for the site's n; the
number is the length of the field the signed schema names ``parameters_field``, never a job
parameter). That field is a matrix; model weights never count toward ``max_parameters_ratio``
(a rule for regression): they leave only where the policy sets ``allow_weights`` (else
``weights``), in the encoded form of :mod:`radflow.federation.weights`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from radflow.federation.policy import SitePolicy
from radflow.federation.release import ReleaseSchema
from radflow.federation.structure import (
    IDENTIFIERS,
    Refused,
    check_release,
    looks_identifying,
)

__all__ = ["IDENTIFIERS", "GateResult", "Refused", "gate", "looks_identifying"]


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
        kinds = {spec.kind for spec in schema.for_round(params.get("round")).fields.values()}
    except ValueError:
        raise Refused("schema") from None
    if "weights" in kinds and not policy.allow_weights:
        raise Refused("weights")
    checked = check_release(release, schema, params)  # what does not depend on the policy
    schema, out, n = checked.schema, dict(checked.values), checked.n
    if n < policy.min_cohort:
        raise Refused("min_cohort", f"n = {n}, the policy's min_cohort is {policy.min_cohort}")
    parameters = schema.parameter_count(checked.shapes)  # from the signed schema, not the job
    if parameters is not None and parameters > policy.max_parameters_ratio * n:
        raise Refused("parameters", f"{parameters} parameters for n = {n} (at most "
                                    f"{policy.max_parameters_ratio} n)")
    suppressed: list[str] = []
    for name, spec in schema.fields.items():
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
