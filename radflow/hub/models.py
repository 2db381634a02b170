"""The hub database: enrolled sites, issued tokens (hashed), used client assertions, the
coordinators' web sessions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from radflow.catalog.models.base import utcnow
from radflow.catalog.models.web import WebSessionFields


class HubModel(SQLModel, registry=registry()):
    """The hub's tables: a metadata of their own, apart from the site catalog's."""


class HubSite(HubModel, table=True):
    """A site the hub knows: pending (a code was issued), enrolled (its key is known), revoked."""

    __tablename__ = "hub_site"

    name: str = Field(primary_key=True)
    status: str = Field(default="pending", index=True)  # pending, enrolled, revoked
    code_hash: str | None = None  # sha256 of the one-time enrolment code
    code_expires: datetime | None = None
    public_key_pem: str | None = None
    fingerprint: str | None = None
    created_at: datetime = Field(default_factory=utcnow)
    enrolled_at: datetime | None = None
    revoked_at: datetime | None = None
    last_heard: datetime | None = None  # its agent's last report (radflow.hub.fleet)


class HubSiteReport(HubModel, table=True):
    """What a site's agent reported about itself (versions, models, approvals, policy, health,
    its last job): a row when the report changed, so the table is the site's history."""

    __tablename__ = "hub_site_report"

    id: int | None = Field(default=None, primary_key=True)
    site: str = Field(index=True)
    received_at: datetime = Field(default_factory=utcnow, index=True)
    report: str  # JSON, as posted (checked by radflow.hub.fleet.SiteReport)
    report_hash: str  # sha256 of its canonical JSON (an unchanged report adds no row)


class HubToken(HubModel, table=True):
    """An access token (only its hash is kept), scoped to one site."""

    __tablename__ = "hub_token"

    token_hash: str = Field(primary_key=True)
    site: str = Field(index=True)
    expires_at: datetime


class UsedAssertion(HubModel, table=True):
    """Client assertion ids (jti) seen, so an assertion cannot be replayed."""

    __tablename__ = "hub_used_assertion"

    jti: str = Field(primary_key=True)
    expires_at: datetime


class HubVersion(HubModel, table=True):
    """A published flow version: its signed manifest and its bundle, by content hash. (The
    hub keeps the version history; Prefect's open-source server keeps only a version string.)"""

    __tablename__ = "hub_version"

    hash: str = Field(primary_key=True)
    name: str = Field(index=True)
    label: str = ""
    signed: str  # the SignedVersion as JSON
    bundle: bytes
    publisher: str = ""
    published_at: datetime = Field(default_factory=utcnow)


class HubStudy(HubModel, table=True):
    """A study: one flow version run at a set of sites with the same parameters."""

    __tablename__ = "hub_study"

    id: str = Field(primary_key=True)
    name: str
    version_hash: str
    params: str = "{}"  # JSON
    created_at: datetime = Field(default_factory=utcnow)
    deadline: datetime
    started_by: str | None = None  # "cli:<user>" on the hub, "token:<name>" through the API


class HubJob(HubModel, table=True):
    """One site's part of a study, from queued to released (or refused, or missed, or
    invalid_release: a release the hub's own check of its schema refused)."""

    __tablename__ = "hub_job"

    id: str = Field(primary_key=True)
    study_id: str = Field(index=True)
    site: str = Field(index=True)
    version_hash: str
    params: str = "{}"
    round: int = Field(default=0, sa_column_kwargs={"server_default": "0"})  # 0, 1, ...
    # queued, taken, released, refused, missed, invalid_release
    status: str = Field(default="queued", index=True)
    release: str | None = None  # the released aggregate (JSON), exactly as posted
    refusal: str | None = None  # a code: not_approved, bad_signature, policy_violation:...
    policy: str | None = None  # the site's policy summary (JSON): what its gate applied
    posted_at: datetime | None = None
    reason: str | None = None  # invalid_release: the rule and schema field (never a value)
    body_hash: str | None = None  # invalid_release: the refused release's hash (a repost)


class HubApiToken(HubModel, table=True):
    """A person's API token for the hub (coordinator or admin): the CLI away from the hub
    machine. Only its hash is kept; it expires and can be revoked."""

    __tablename__ = "hub_api_token"

    id: str = Field(primary_key=True)  # the public part, shown in lists
    token_hash: str = Field(index=True, unique=True)
    name: str  # who holds it
    role: str  # coordinator or admin
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    revoked_at: datetime | None = None


class HubWebSession(HubModel, WebSessionFields, table=True):
    """A session of the coordinators' web app (the same columns as a site's web sessions)."""

    __tablename__ = "hub_web_session"


class HubDiscovery(HubModel, table=True):
    """A site's newest collection summary for data discovery (radflow.federation.discovery),
    as it published it through its policy's rule; withdrawn (the row removed) when the site
    turns discovery off."""

    __tablename__ = "hub_discovery"

    site: str = Field(primary_key=True)
    received_at: datetime = Field(default_factory=utcnow)
    summary: str  # JSON, as posted (checked by radflow.hub.discovery.Summary)


class HubAccessRequest(HubModel, table=True):
    """A coordinator's request to run flows on a cohort at chosen sites, for a purpose: each
    site's steward approves or declines it (HubAccessDecision)."""

    __tablename__ = "hub_access_request"

    id: str = Field(primary_key=True)
    purpose: str
    flows: str = "[]"  # JSON list of flow names
    cohort: str | None = None  # the canonical cohort definition (JSON), or None: any cohort
    cohort_hash: str | None = None
    sites: str = "[]"  # JSON list of site names
    created_by: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class HubAccessDecision(HubModel, table=True):
    """One site's steward's decision on an access request, as the site reported it."""

    __tablename__ = "hub_access_decision"

    request_id: str = Field(primary_key=True)
    site: str = Field(primary_key=True)
    decision: str  # approved, declined
    decided_by: str = ""
    reason: str = ""
    decided_at: datetime = Field(default_factory=utcnow)
