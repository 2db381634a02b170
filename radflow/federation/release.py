"""The release schema: what the site part of a flow version may send back, declared field by
field with a kind and a shape, and published (as JSON Schema) inside the signed manifest.

Kinds:
    count:     a non-negative integer (small cells are suppressed by the site's policy)
    sum:       a number (a sum, or a centred sum of squares)
    histogram: non-negative integer bin counts of a declared length (small bins suppressed)
    matrix:    numbers of a declared shape (a gradient, a Hessian)
    weights:   model weights (only where the policy allows them, ``allow_weights``), encoded
               compactly: ``{"dtype", "shape", "sha256", "data": <base64>}`` of a declared
               ``dtypes`` (``float16`` by default; ``uint32`` for a securely aggregated, masked
               update); see :mod:`radflow.federation.weights`. A dimension of a weights field
               may be as large as MAX_WEIGHT_VALUES (one model of up to that many values).
    enum:      one string of a declared list (no free text leaves a site)
    round_key: a site's signed ephemeral X25519 public key for secure aggregation
               (:mod:`radflow.federation.secagg`): ``{"public_key": <base64 of 32 bytes>,
               "signature": <URL-safe base64 of 64 bytes>}``, nothing else; the study, round
               and site it is for are the job's (the hub adds them when it relays the key)
    coarse:    numbers with at most two significant digits (where values lie, rounded
               outward: a shared binning's span, never a value of the data)

There is no kind for a minimum, a maximum or a per-case row: a release can never hold them.

A dimension of a shape is a number, or the name of a job parameter: an integer parameter
(``bins``) or the length of a list parameter (``features``); the gate resolves it from the
job's parameters. A count field with ``small: refuse`` refuses the whole release when it is under
min_cell (``policy_violation:min_cell``): for a count that other fields reveal anyway (a
logistic gradient reveals the number of events). A field ``counted_by`` a histogram of counts
of the same shape loses each cell whose count is suppressed (a sum over one value is that
value).

A flow that runs in rounds declares one schema per round (``rounds``); the job's parameter
``round`` names the one that applies.

A schema whose release is a model names the field that holds one value per model parameter
(``parameters_field``, e.g. a gradient): the site's policy caps the number of parameters per
case (``max_parameters_ratio``), counted from that field, never from a job parameter. That
field is a matrix: the DataSHIELD rule is one for regression. A weights field never counts
toward it (a network has far more parameters than cases); weights leave only where the
site's steward set ``allow_weights``, which is the consent to exactly that. A coarse
array is counted by a histogram (``counted_by``): a cell with few values must not show where
they lie.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Kind = Literal["count", "sum", "histogram", "matrix", "weights", "enum", "coarse",
               "round_key"]
PARAM_NAME = r"^[a-z][a-z0-9_]{0,63}$"
FIELD_NAME = r"^[a-z][a-z0-9_]{0,63}$"
MAX_DIMENSION = 100_000  # the largest dimension of an array of any kind but weights
MAX_WEIGHT_VALUES = 1 << 24  # the most values a weights field holds (16.8 M: 32 MiB as fp16)
WEIGHT_DTYPES = ("float16", "uint32")
# Names that say "extreme value": refused whatever their kind (policy: never raw min or max).
EXTREME_NAMES = ("min", "max", "minimum", "maximum", "range", "extreme")


class ReleaseField(BaseModel):
    """One field of a release. Unknown attributes are refused: a site never runs a flow whose
    release rules it does not fully understand (an older radflow would ignore them)."""

    model_config = ConfigDict(extra="forbid")

    kind: Kind
    shape: tuple[int | str, ...] = Field(default=(), description="array shape; () for a "
                                         "scalar; a name: that job parameter's value or length")
    values: tuple[str, ...] = Field(default=(), description="the allowed strings of an enum")
    counted_by: str | None = Field(default=None, description="a histogram field of the same "
                                   "shape: its suppressed cells are suppressed here too")
    small: Literal["suppress", "refuse"] = Field(default="suppress", description="a count "
                                                 "under min_cell: suppressed, or the whole "
                                                 "release refused (where other fields would "
                                                 "reveal it)")
    dtypes: tuple[Literal["float16", "uint32"], ...] = Field(
        default=(), description="the encodings a weights field may have (default: float16)")
    description: str = ""

    @property
    def cap(self) -> int:
        """The largest dimension (and, for weights, the most values) this field may have."""
        return MAX_WEIGHT_VALUES if self.kind == "weights" else MAX_DIMENSION

    def allowed_dtypes(self) -> tuple[str, ...]:
        """The encodings a weights field may have."""
        return self.dtypes or ("float16",)

    @model_validator(mode="after")
    def _consistent(self) -> ReleaseField:
        if self.kind == "enum" and not self.values:
            raise ValueError("an enum field lists its values")
        if self.kind != "enum" and self.values:
            raise ValueError("only enum fields list values")
        if self.kind in ("histogram", "matrix", "weights") and not self.shape:
            raise ValueError(f"a {self.kind} field declares its shape")
        if self.kind in ("count", "sum", "enum", "round_key") and self.shape:
            raise ValueError(f"a {self.kind} field is a scalar")
        if self.dtypes and self.kind != "weights":
            raise ValueError("only weights fields declare dtypes")
        import re

        for d in self.shape:
            if isinstance(d, str) and not re.match(PARAM_NAME, d):
                raise ValueError(f"dimension {d!r} is not a parameter name")
            if isinstance(d, int) and not 1 <= d <= self.cap:
                raise ValueError(f"every dimension is between 1 and {self.cap}")
        return self

    def resolved(self, params: dict[str, Any]) -> tuple[int, ...]:
        """The shape for a job with ``params``.

        Raises:
            ValueError: a named dimension is missing, not a size, or out of range.
        """
        out = []
        for d in self.shape:
            if isinstance(d, str):
                value = params.get(d)
                size = len(value) if isinstance(value, list) else value
                if isinstance(size, bool) or not isinstance(size, int):
                    raise ValueError(f"the job has no parameter {d!r} to size an array")
                d = size
            if not 1 <= d <= self.cap:
                raise ValueError(f"every dimension is between 1 and {self.cap}")
            out.append(d)
        if self.kind == "weights" and math.prod(out) > MAX_WEIGHT_VALUES:
            raise ValueError(f"a weights field holds at most {MAX_WEIGHT_VALUES} values")
        return tuple(out)


class ReleaseSchema(BaseModel):
    """The fields a release holds, all required, nothing else allowed; or, for a flow that runs
    in rounds, one such schema per round."""

    model_config = ConfigDict(extra="forbid")

    fields: dict[str, ReleaseField] = Field(default_factory=dict)
    cohort_field: str = Field(default="n", description="the count field that is the cohort size")
    rounds: dict[str, ReleaseSchema] | None = Field(default=None, description="one schema per "
                                                    "round, by the job parameter `round`")
    parameters_field: str | None = Field(default=None, description="a matrix field with one "
                                         "value per model parameter: the policy's "
                                         "max_parameters_ratio counts them (never weights)")

    def for_round(self, name: Any) -> ReleaseSchema:
        """The schema of round ``name`` (the schema itself for a one-round flow).

        Raises:
            ValueError: the flow has rounds and ``name`` is none of them.
        """
        if self.rounds is None:
            return self
        if not isinstance(name, str) or name not in self.rounds:
            raise ValueError(f"no round {name!r}")
        return self.rounds[name]

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
        if self.rounds is not None:
            if self.fields or not self.rounds or self.parameters_field is not None:
                raise ValueError("a schema with rounds declares its fields in each round")
            return self
        if self.parameters_field is not None:
            model = self.fields.get(self.parameters_field)
            if model is None or model.kind != "matrix":
                raise ValueError(f"parameters_field {self.parameters_field!r} is not a matrix "
                                 "field (weights never count toward max_parameters_ratio: "
                                 "they leave only where the policy sets allow_weights)")
        for name, spec in self.fields.items():
            if spec.kind == "coarse" and spec.shape and spec.counted_by is None:
                raise ValueError(f"the coarse array {name!r} needs counted_by: a histogram of "
                                 "the same shape (a cell with few values must not show where "
                                 "they lie)")
            if spec.counted_by is not None:
                counter = self.fields.get(spec.counted_by)
                if counter is None or counter.kind != "histogram" or counter.shape != spec.shape:
                    raise ValueError(f"{name!r} is counted by {spec.counted_by!r}, which is "
                                     "not a histogram field of the same shape")
        spec = self.fields.get(self.cohort_field)
        if spec is None or spec.kind != "count":
            raise ValueError(f"the cohort size {self.cohort_field!r} must be a count field")
        return self

    def parameter_count(self, shapes: dict[str, tuple[int, ...]]) -> int | None:
        """The number of model parameters a release holds (its ``parameters_field``'s values,
        with the field's resolved shape from ``shapes``), or None for a release that is no
        model."""
        if self.parameters_field is None:
            return None
        count = 1
        for size in shapes[self.parameters_field]:
            count *= size
        return count

    def json_schema(self) -> dict[str, Any]:
        """The release as JSON Schema (what the manifest publishes and sites display)."""
        if self.rounds is not None:
            return {"oneOf": [s.json_schema() | {"x-radflow-round": name}
                              for name, s in self.rounds.items()]}
        props: dict[str, Any] = {}
        for name, spec in self.fields.items():
            if spec.kind == "enum":
                item: dict[str, Any] = {"type": "string", "enum": list(spec.values)}
            elif spec.kind in ("count", "histogram"):
                item = {"type": ["integer", "null"], "minimum": 0}
            elif spec.kind == "weights":  # encoded, not nested arrays
                props[name] = {"type": "object", "required": ["dtype", "shape", "sha256",
                                                              "data"],
                               "properties": {"dtype": {"enum": list(spec.allowed_dtypes())},
                                              "shape": {"type": "array",
                                                        "x-radflow-shape": list(spec.shape)},
                                              "sha256": {"type": "string"},
                                              "data": {"type": "string",
                                                       "contentEncoding": "base64"}},
                               "additionalProperties": False, "x-radflow-kind": "weights"}
                continue
            elif spec.kind == "round_key":
                props[name] = {"type": "object", "required": ["public_key", "signature"],
                               "properties": {"public_key": {"type": "string",
                                                             "contentEncoding": "base64"},
                                              "signature": {"type": "string"}},
                               "additionalProperties": False, "x-radflow-kind": "round_key"}
                continue
            else:
                item = {"type": "number"}
            for size in reversed(spec.shape):
                item = {"type": "array", "items": item} | (
                    {"minItems": size, "maxItems": size} if isinstance(size, int)
                    else {"x-radflow-size": size})
            props[name] = item | {"x-radflow-kind": spec.kind}
        return {"type": "object", "properties": props, "required": sorted(self.fields),
                "additionalProperties": False}
