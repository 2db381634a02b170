"""The structural check of a release against its flow version's release schema: the part of
the egress gate that does not depend on a site's policy. The site's gate
(:mod:`radflow.federation.egress`) runs it before its policy rules; the hub runs the same code
on every release a site posts (:mod:`radflow.hub.inbox`), because the hub trusts nothing a site
sends.

    checked = check_release(release, schema, params)                 # at the site, pre-gate
    checked = check_release(posted, schema, params, released=True)   # at the hub

It checks exactly the declared fields, of their kinds and shapes (a named dimension resolved
from the job's parameters, the round picked by ``params["round"]``), weights in their encoded
form only (:func:`radflow.federation.weights.check_encoded`: a declared dtype, the resolved
shape, finite values, the hash, the size), finite numbers, counts that
are non-negative integers JSON carries exactly, enum values from the declared list, coarse
values with at most two significant digits, no identifiers in keys, values or the schema, and
no array that could hold one value per case (``per_case``: a dimension the schema fixes at n or
more; a dimension a job parameter sizes is the coordinator's choice, not the data's).

With ``released=True`` it checks a release as it leaves the gate: a ``None`` exactly where the
gate may have suppressed a value (a count other than the cohort size, a histogram cell, a cell
of a field counted by a histogram where that histogram's cell is ``None``), and nowhere else.

A failure raises :class:`Refused` with the rule (``schema``, ``identifier``, ``free_text``,
``shape``, ``coarse``, ``per_case``) and the schema field it is about: never a value.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

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
# The largest integer JSON carries exactly (a double's 53 bits): a larger "count" is no count,
# and a larger integer is no finite float either.
MAX_INT = 2**53 - 1


class Refused(Exception):
    """A release that may not leave (at the site) or be accepted (at the hub): not a program
    error. ``field`` is the schema field it is about (a name from the signed manifest), if any;
    ``detail`` says more for the site's own log and audit trail, never for the hub."""

    def __init__(self, rule: str, detail: str | None = None, field: str | None = None) -> None:
        super().__init__(rule)
        self.rule = rule
        self.code = f"policy_violation:{rule}"
        self.detail = detail
        self.field = field

    def reason(self) -> str:
        """A short reason that names the rule and the schema field, never a posted value."""
        return self.rule + (f" (field {self.field})" if self.field else "")


@dataclass(frozen=True)
class Checked:
    """A release that passed the structural check: the round's schema, the values, each
    field's resolved shape and the cohort size."""

    schema: ReleaseSchema
    values: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    n: int


def looks_identifying(text: str) -> bool:
    """Whether a string looks like a UID, a date, a time, a person name, an ID or an e-mail."""
    return any(p.search(text) for p in IDENTIFIERS)


def check_release(release: Any, schema: ReleaseSchema, params: dict[str, Any] | None = None,
                  *, released: bool = False) -> Checked:
    """Check ``release`` against ``schema`` for a job with ``params``.

    Raises:
        Refused: the release does not match the schema (the rule and the field say how).
    """
    params = params if isinstance(params, dict) else {}
    try:
        schema = schema.for_round(params.get("round"))
    except ValueError:
        raise Refused("schema", "the job names no round of this flow") from None
    for name, spec in schema.fields.items():  # the schema itself must not carry identifiers
        if any(looks_identifying(v) for v in spec.values):
            raise Refused("identifier", field=name)
    if not isinstance(release, dict):
        raise Refused("schema", "the release is not an object")
    for key in release:
        if not isinstance(key, str) or looks_identifying(key):
            raise Refused("identifier", "a key of the release")
    if set(release) != set(schema.fields):
        raise Refused("schema", f"fields missing: {sorted(set(schema.fields) - set(release))}, "
                                f"{len(set(release) - set(schema.fields))} not declared")
    shapes: dict[str, tuple[int, ...]] = {}
    for name, spec in schema.fields.items():
        try:
            shapes[name] = spec.resolved(params)
        except ValueError as exc:
            raise Refused("shape", f"{name}: {exc}", field=name) from None
    values: dict[str, Any] = {}
    order = sorted(schema.fields, key=lambda k: schema.fields[k].counted_by is not None)
    for name in order:  # histograms before the fields they count
        spec = schema.fields[name]
        blanks = _blanks(name, spec, schema, values, released)
        try:
            values[name] = _field(release[name], spec, shapes[name], blanks)
        except Refused as exc:
            exc.field = name
            exc.detail = exc.detail or f"field {name!r} ({spec.kind}, shape {shapes[name]})"
            raise
    n = values[schema.cohort_field]
    if n is None:
        raise Refused("schema", "the cohort size is missing", field=schema.cohort_field)
    for name, spec in schema.fields.items():
        for declared, size in zip(spec.shape, shapes[name], strict=True):
            if isinstance(declared, int) and size >= n:
                # as many entries as cases: could be one per case (a dimension the job's
                # parameters size, e.g. one row per feature, is the coordinator's choice)
                raise Refused("per_case", f"field {name!r}: a dimension of {size} for n = {n}",
                              field=name)
    return Checked(schema, values, shapes, n)


def _blanks(name: str, spec: ReleaseField, schema: ReleaseSchema, values: dict[str, Any],
            released: bool) -> Any:
    """Where a released field may (must) be ``None``: True (anywhere: suppressible), False
    (nowhere), or, for a field counted by a histogram, that histogram's values (``None``
    exactly where its cells are). Before the gate (``released`` False): nowhere."""
    if not released:
        return False
    if spec.kind == "histogram":  # its own small cells, and any its counter lost
        return True
    if spec.counted_by is not None:
        return values[spec.counted_by]
    return spec.kind == "count" and name != schema.cohort_field and spec.small == "suppress"


def _field(value: Any, spec: ReleaseField, shape: tuple[int, ...], blanks: Any) -> Any:
    if spec.kind == "weights":  # encoded, never blank: radflow.federation.weights
        from radflow.federation.weights import check_encoded

        check_encoded(value, shape, spec.allowed_dtypes())
        return value
    if spec.kind == "round_key":  # random bytes of fixed lengths: nothing else fits
        _round_key(value)
        return value
    if spec.kind == "enum":
        if not isinstance(value, str):
            raise Refused("schema")
        if looks_identifying(value):
            raise Refused("identifier")
        if value not in spec.values:
            raise Refused("free_text")
        return value
    integer = spec.kind in ("count", "histogram")
    checked = _array(value, shape, integer, blanks)
    if spec.kind == "coarse":
        from radflow.federation.stats import is_coarse

        def check(v: Any) -> None:
            if isinstance(v, list):
                for item in v:
                    check(item)
            elif v is not None and not is_coarse(v):
                raise Refused("coarse")

        check(checked)
    return checked


def _round_key(value: Any) -> None:
    """A signed X25519 public key (:mod:`radflow.federation.secagg`): exactly 32 bytes of
    standard base64 and a 64-byte Ed25519 signature in URL-safe base64 without padding."""
    import base64
    import binascii

    if not isinstance(value, dict) or set(value) != {"public_key", "signature"} or \
            not all(isinstance(v, str) for v in value.values()):
        raise Refused("schema", "a round key is {public_key, signature}")
    key, signature = value["public_key"], value["signature"]
    try:
        raw_key = base64.b64decode(key, validate=True)
        ok_signature = re.fullmatch(r"[A-Za-z0-9_-]{86}", signature) is not None
    except (binascii.Error, ValueError):
        raw_key, ok_signature = b"", False
    if len(raw_key) != 32 or len(key) != 44 or not ok_signature:
        raise Refused("schema", "a round key holds a 32-byte key and a 64-byte signature")


def _array(value: Any, shape: tuple[int, ...], integer: bool, blanks: Any) -> Any:
    if shape:
        if not isinstance(value, list) or len(value) != shape[0]:
            raise Refused("shape")
        if isinstance(blanks, list) and len(blanks) != shape[0]:
            raise Refused("shape")
        return [_array(v, shape[1:], integer, blanks[i] if isinstance(blanks, list) else blanks)
                for i, v in enumerate(value)]
    if isinstance(blanks, list):  # the counting histogram is deeper than this field
        raise Refused("shape")
    # True: may be None (suppressible); None: must be None (its count was suppressed, the
    # gate blanks the value with it); False or a count: a value
    if value is None:
        if blanks is True or blanks is None:
            return None
        raise Refused("schema", "a value is missing")
    if isinstance(value, str):
        raise Refused("identifier" if looks_identifying(value) else "free_text")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused("shape" if isinstance(value, list | dict) else "schema")
    if blanks is None:
        raise Refused("schema", "a value where its count was suppressed")
    if isinstance(value, int) and abs(value) > MAX_INT:
        raise Refused("schema", "an integer beyond what JSON carries exactly")
    if integer and (not isinstance(value, int) or value < 0):
        raise Refused("schema")
    if not integer and not math.isfinite(value):
        raise Refused("schema")
    return value
