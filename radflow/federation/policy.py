"""A site's own policy (``sites/NAME/policy.yaml``): what may leave the site, and how jobs are
taken. The site owns it; no hub setting can loosen it. Every field has a documented default,
shown by ``radflow site policy show``.

Defaults follow the stricter of the peers (FACTS: DataSHIELD nfilter.tab 3, nfilter.glm 0.33;
NVFlare min_count 10): a cohort of at least 10, cells under 5 suppressed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StringConstraints, ValidationError, field_validator

from radflow.errors import ConfigurationError

# one setting of a policy summary as a site sends it (with a result, in its fleet report): what
# the hub accepts, bounded (a finite number, a bool, a short string)
Setting = (Annotated[int, Field(ge=-(2**53), le=2**53)] | Annotated[float, Field(
    allow_inf_nan=False)] | bool | Annotated[str, StringConstraints(max_length=64)])


class SitePolicy(BaseModel):
    """What the egress gate enforces on every release of this site."""

    min_cohort: int = Field(default=10, ge=1, description="refuse a release about fewer cases")
    min_cell: int = Field(default=5, ge=1, description="counts and histogram bins under this "
                          "(and above 0) are suppressed, with complementary suppression")
    max_parameters_ratio: float = Field(default=0.33, gt=0, le=1, description="a model may "
                                        "have at most this many parameters per case (DataSHIELD)")
    allow_weights: bool = Field(default=False, description="whether model weights may leave")
    job_mode: Literal["manual", "auto"] = Field(default="manual", description="manual: a data "
                                                "steward accepts each queued job")
    manual_release: bool = Field(default=False, description="a data steward approves each "
                                 "release after seeing exactly what would leave")
    discovery: Literal["off", "boolean", "count"] = Field(
        default="off", description="the collection summary this site publishes for data "
        "discovery: off, boolean (yes/no per cell) or count (rounded)")
    discovery_min_count: int = Field(default=10, ge=1, description="discovery: a cell of fewer "
                                     "series is left out of the summary")
    discovery_round_to: int = Field(default=10, ge=1, description="discovery: counts are "
                                    "rounded to the nearest multiple of this")
    discovery_every_hours: float = Field(default=24.0, gt=0, le=24 * 31, description="discovery:"
                                         " hours between two summaries (and at once after a "
                                         "change of policy)")
    require_access_request: bool = Field(default=False, description="a study runs here only "
                                         "under an access request this site's steward approved")
    export_requires_steward: bool = Field(default=True, description="a de-identified export "
                                          "leaves only after a data steward approved it")
    approved: list[str] = Field(default_factory=list, description="approved flow versions, by "
                                "content hash (nothing is approved by default)")
    approved_models: list[str] = Field(default_factory=list, description="approved model "
                                       "versions, by content hash (radflow model approve)")

    @field_validator("discovery", mode="before")
    @classmethod
    def _off(cls, value: Any) -> Any:
        """YAML reads a bare ``off`` as false (``discovery=off``, ``discovery: off``)."""
        return "off" if value is False else value

    def summary(self, fleet: bool = False) -> dict[str, Any]:
        """What the gate applied, sent with every result so that a study's report can say it
        (the approvals stay at the site); ``fleet``: every setting, for the site's report
        (discovery and access requests too)."""
        return self.model_dump(exclude=set(APPROVALS) | (set() if fleet else FLEET_ONLY))


APPROVALS = ("approved", "approved_models")  # set by approving, never by `policy set`
# not about a release: in the site's report only
FLEET_ONLY = {"discovery", "discovery_min_count", "discovery_round_to", "discovery_every_hours",
              "require_access_request", "export_requires_steward"}


def policy_path(site_root: Path) -> Path:
    return site_root / "policy.yaml"


def load_policy(site_root: Path) -> SitePolicy:
    """The site's policy (defaults when it has no file yet).

    Raises:
        ConfigurationError: the file is not valid YAML or has an unknown or invalid setting.
    """
    import yaml

    path = policy_path(site_root)
    if not path.exists():
        return SitePolicy()
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return SitePolicy.model_validate(data)
    except (yaml.YAMLError, ValueError) as exc:
        raise ConfigurationError(f"{path} is not a valid site policy: {str(exc).splitlines()[0]}",
                                 fix="fix the file, or remove it to go back to the defaults "
                                     "(`radflow site policy show` lists them)") from exc


def save_policy(site_root: Path, policy: SitePolicy) -> Path:
    import yaml

    path = policy_path(site_root)
    lines = ["# radflow site policy: what may leave this site (radflow site policy show|set)"]
    for name, field in SitePolicy.model_fields.items():
        default = field.get_default(call_default_factory=True)
        lines.append(f"# {name}: {field.description} (default {default!r})")
    text = "\n".join(lines) + "\n" + yaml.safe_dump(policy.model_dump(mode="json"), sort_keys=False)
    path.write_text(text)
    return path


def set_values(policy: SitePolicy, assignments: list[str]) -> SitePolicy:
    """``policy`` with ``key=value`` assignments applied (values parsed as YAML scalars).

    Raises:
        ConfigurationError: an unknown key or an invalid value.
    """
    import yaml

    update: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep or key not in SitePolicy.model_fields or key in APPROVALS:
            raise ConfigurationError(
                f"cannot set {item!r}", fix="use KEY=VALUE with one of "
                f"{', '.join(k for k in SitePolicy.model_fields if k not in APPROVALS)} "
                "(approvals: radflow site approve|revoke HASH, radflow model approve HASH)")
        update[key] = yaml.safe_load(raw)
    try:
        return SitePolicy.model_validate(policy.model_dump() | update)
    except ValidationError as exc:
        said = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                         for e in exc.errors()[:3])
        raise ConfigurationError(f"invalid policy value: {said}",
                                 fix="see `radflow site policy show` for each setting") from exc
