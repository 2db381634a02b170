"""What a reviewer decides: the typed input a suspended case run waits for."""

from __future__ import annotations

from typing import Literal

from prefect.input import RunInput
from pydantic import ConfigDict, Field, model_validator

UID = r"^[0-9]+(\.[0-9]+)*$"
# The rule that ties the fields together, in the JSON schema too: Prefect's server validates a
# resume against the schema, so an invalid decision is refused there (the run stays suspended)
# instead of failing the run after it resumed (Prefect issue #12279).
CORRECTION_RULE = {"allOf": [{
    "if": {"properties": {"decision": {"const": "corrected"}}, "required": ["decision"]},
    "then": {"required": ["corrected_seg_uid"],
             "properties": {"corrected_seg_uid": {"type": "string"}}},
    "else": {"properties": {"corrected_seg_uid": {"type": "null"}}}}]}


class ReviewDecision(RunInput):
    """A reviewer's decision on one case's segmentation.

    The worklist fills ``reviewer`` from the log-in (never typed); an admin resuming from the
    Prefect UI leaves the default. ``expired`` is what radflow decides when the due time passes.
    """

    model_config = ConfigDict(json_schema_extra=CORRECTION_RULE)

    decision: Literal["accept", "reject", "corrected", "expired"] = Field(
        description="accept the segmentation, reject it, or point at the corrected SEG")
    comment: str = Field(default="", max_length=1000, description="why (kept with the result)")
    reviewer: str = Field(default="prefect-ui", min_length=1, max_length=200,
                          pattern=r"^[\w.@:+-]+$",
                          description="who decided: the log-in's subject (set by the worklist)")
    corrected_seg_uid: str | None = Field(
        default=None, max_length=64, pattern=UID,
        description="for corrected: the SeriesInstanceUID of the corrected SEG in Orthanc")

    @model_validator(mode="after")
    def _correction(self) -> ReviewDecision:
        if (self.decision == "corrected") != bool(self.corrected_seg_uid):
            raise ValueError("corrected_seg_uid is required for 'corrected', and only then")
        return self
