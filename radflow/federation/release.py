"""The release schema: what the site part of a flow version may send back, declared field by
field with a kind and a shape, and published (as JSON Schema) inside the signed manifest.

Kinds:
    count:     a non-negative integer (small cells are suppressed by the site's policy)
    sum:       a number (a sum, or a centred sum of squares)
    histogram: non-negative integer bin counts of a declared length (small bins suppressed)
    matrix:    numbers of a declared shape (a gradient, a Hessian)
    weights:   numbers of a declared shape that are model weights (only where the policy allows)
    enum:      one string of a declared list (no free text leaves a site)

There is no kind for a minimum, a maximum or a per-case row: a release can never hold them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

Kind = Literal["count", "sum", "histogram", "matrix", "weights", "enum"]
FIELD_NAME = r"^[a-z][a-z0-9_]{0,63}$"
# Names that say "extreme value": refused whatever their kind (policy: never raw min or max).
EXTREME_NAMES = ("min", "max", "minimum", "maximum", "range", "extreme")


class ReleaseField(BaseModel):
    """One field of a release."""

    kind: Kind
    shape: tuple[int, ...] = Field(default=(), description="array shape; () for a scalar")
    values: tuple[str, ...] = Field(default=(), description="the allowed strings of an enum")
    description: str = ""

    @model_validator(mode="after")
    def _consistent(self) -> ReleaseField:
        if self.kind == "enum" and not self.values:
            raise ValueError("an enum field lists its values")
        if self.kind != "enum" and self.values:
            raise ValueError("only enum fields list values")
        if self.kind in ("histogram", "matrix", "weights") and not self.shape:
            raise ValueError(f"a {self.kind} field declares its shape")
        if self.kind in ("count", "sum", "enum") and self.shape:
            raise ValueError(f"a {self.kind} field is a scalar")
        if any(d < 1 or d > 100_000 for d in self.shape):
            raise ValueError("every dimension is between 1 and 100000")
        return self


class ReleaseSchema(BaseModel):
    """The fields a release holds, all required, nothing else allowed."""

    fields: dict[str, ReleaseField]
    cohort_field: str = Field(default="n", description="the count field that is the cohort size")

    @field_validator("fields")
    @classmethod
    def _names(cls, fields: dict[str, ReleaseField]) -> dict[str, ReleaseField]:
        import re

        for name in fields:
            if not re.match(FIELD_NAME, name):
                raise ValueError(f"field name {name!r} is not lower_snake_case (at most 64)")
            if any(part in EXTREME_NAMES for part in name.split("_")):
                raise ValueError(f"field {name!r} names an extreme value: releases never hold "
                                 "a raw minimum or maximum")
        return fields

    @model_validator(mode="after")
    def _cohort(self) -> ReleaseSchema:
        spec = self.fields.get(self.cohort_field)
        if spec is None or spec.kind != "count":
            raise ValueError(f"the cohort size {self.cohort_field!r} must be a count field")
        return self

    def json_schema(self) -> dict[str, Any]:
        """The release as JSON Schema (what the manifest publishes and sites display)."""
        props: dict[str, Any] = {}
        for name, spec in self.fields.items():
            if spec.kind == "enum":
                item: dict[str, Any] = {"type": "string", "enum": list(spec.values)}
            elif spec.kind in ("count", "histogram"):
                item = {"type": ["integer", "null"], "minimum": 0}
            else:
                item = {"type": "number"}
            for size in reversed(spec.shape):
                item = {"type": "array", "items": item, "minItems": size, "maxItems": size}
            props[name] = item | {"x-radflow-kind": spec.kind}
        return {"type": "object", "properties": props, "required": sorted(self.fields),
                "additionalProperties": False}
