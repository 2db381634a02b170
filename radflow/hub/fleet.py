"""The fleet: every site's versions and health, as its agent reports them
(:mod:`radflow.federation.fleet`), kept with their history, and the table an operator reads
(`radflow hub fleet`, the web app's Sites page).

    record_report(engine, "uk-essen", SiteReport.model_validate(body))  # the API's report route
    rows = fleet(engine)      # per site: health, last heard, versions and drift, approvals...

Nothing a site posts is trusted: the report's fields are bounded and typed (an unknown field
is refused), and a report adds a history row only when it differs from the site's last one.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Annotated, Any

from packaging.version import InvalidVersion, Version
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from radflow.catalog.models.base import as_utc, utcnow
from radflow.federation.manifest import SignedVersion, normalize, unmet_requirements
from radflow.federation.policy import Setting
from radflow.hub.models import HubJob, HubSite, HubSiteReport, HubStudy
from radflow.hub.registry import detached, sites, versions

SILENT_AFTER = timedelta(minutes=5)  # an agent reports every minute: five missed is silence
Short = Annotated[str, StringConstraints(max_length=64)]
Hash = Annotated[str, StringConstraints(max_length=80)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PluginReport(_Strict):
    name: Short
    distribution: Annotated[str, StringConstraints(max_length=100)]
    version: Short
    hash: Hash | None = None  # sha256 of the distribution's RECORD
    loaded: bool = True


class ModelReport(_Strict):
    name: Annotated[str, StringConstraints(max_length=100)]
    version: Short
    builtin: bool = False
    model_version: Hash | None = None  # the hub's model version, for one installed from it


class ComponentReport(_Strict):
    name: Short
    state: Annotated[str, StringConstraints(max_length=16)]
    restarts: int = Field(default=0, ge=0, le=2**31)


class HealthReport(_Strict):
    state: Annotated[str, StringConstraints(max_length=16)]
    components: list[ComponentReport] = Field(default_factory=list, max_length=30)


class JobReport(_Strict):
    id: Short
    study: Short | None = None
    state: Short
    outcome: Annotated[str, StringConstraints(max_length=120)] | None = None
    updated_at: Short | None = None


class SiteReport(_Strict):
    """A site's report about itself (see radflow.federation.fleet for what each field is)."""

    radflow: Short
    plugins: list[PluginReport] = Field(default_factory=list, max_length=50)
    models: list[ModelReport] = Field(default_factory=list, max_length=100)
    approved: list[Hash] = Field(default_factory=list, max_length=1000)
    approved_models: list[Hash] = Field(default_factory=list, max_length=1000)
    policy: dict[Short, Setting] = Field(default_factory=dict, max_length=20)
    health: HealthReport
    last_job: JobReport | None = None
    queue: int = Field(default=0, ge=0, le=2**31)

    def digest(self) -> str:
        canonical = json.dumps(self.model_dump(mode="json"), sort_keys=True,
                               separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()


def record_report(engine: Engine, site: str, report: SiteReport) -> bool:
    """Note that ``site`` was heard now, and keep its report where it changed; True when it
    did (a new history row)."""
    digest = report.digest()
    with Session(engine) as session:
        row = session.get(HubSite, site)
        if row is not None:
            row.last_heard = utcnow()
            session.add(row)
        last = session.exec(select(HubSiteReport).where(HubSiteReport.site == site)
                            .order_by(HubSiteReport.id.desc()).limit(1)).first()
        changed = last is None or last.report_hash != digest
        if changed:
            session.add(HubSiteReport(site=site, report=report.model_dump_json(),
                                      report_hash=digest))
        session.commit()
    return changed


def history(engine: Engine, site: str, limit: int = 50) -> list[dict[str, Any]]:
    """A site's reports, newest first: when each was received and what it said."""
    rows = detached(engine, select(HubSiteReport).where(HubSiteReport.site == site)
                    .order_by(HubSiteReport.id.desc()).limit(limit))
    return [{"received_at": as_utc(r.received_at).isoformat(timespec="seconds"),
             **json.loads(r.report)} for r in rows]


def _version(text: str) -> Version | None:
    try:
        return Version(text)
    except InvalidVersion:
        return None


def _newest(texts: list[str]) -> str | None:
    parsed = [(v, t) for t in texts if (v := _version(t)) is not None]
    return max(parsed)[1] if parsed else None


def _behind(have: str, newest: str | None) -> bool:
    mine, best = _version(have), _version(newest) if newest else None
    return mine is not None and best is not None and mine < best


def latest_reports(engine: Engine) -> dict[str, SiteReport]:
    """Each site's newest report."""
    last = select(func.max(HubSiteReport.id)).group_by(HubSiteReport.site)  # (not the history)
    with Session(engine) as session:
        newest = {row.site: row.report for row in session.exec(
            select(HubSiteReport).where(col(HubSiteReport.id).in_(last)))}
    return {site: SiteReport.model_validate_json(text) for site, text in newest.items()}


def _last_studies(engine: Engine) -> dict[str, dict[str, Any]]:
    """Each site's newest study job: the study, its flow, the job's status."""
    out: dict[str, dict[str, Any]] = {}
    with Session(engine) as session:
        query = (select(HubJob, HubStudy).where(HubJob.study_id == HubStudy.id)
                 .order_by(HubStudy.created_at, HubJob.round))
        for job, study in session.exec(query):
            out[job.site] = {"study": study.id, "flow": study.name, "status": job.status,
                             "started": as_utc(study.created_at).isoformat(timespec="seconds")}
    return out


def fleet(engine: Engine, silent_after: timedelta = SILENT_AFTER,
          now: datetime | None = None) -> list[dict[str, Any]]:
    """One row per site the hub knows: its status, when it was last heard (and whether that
    is too long ago), its health, versions (each marked where a newer one runs elsewhere in
    the fleet), installed models, approvals pending for the newest published flow versions,
    its last job and queue, and the last study it took part in."""
    now = now or utcnow()
    reports = latest_reports(engine)
    newest_radflow = _newest([r.radflow for r in reports.values()])
    newest_plugin: dict[str, str | None] = {}
    for report in reports.values():
        for plugin in report.plugins:
            newest_plugin[plugin.distribution] = _newest(
                [x for x in (newest_plugin.get(plugin.distribution), plugin.version) if x])
    newest_flows: dict[str, str] = {}
    for version in versions(engine):  # oldest first
        newest_flows[version.name] = version.hash
    studies = _last_studies(engine)
    rows = []
    for site in sites(engine):
        report = reports.get(site.name)
        heard = as_utc(site.last_heard)
        row: dict[str, Any] = {
            "site": site.name, "status": site.status,
            "last_heard": heard.isoformat(timespec="seconds") if heard else None,
            "heard_seconds_ago": round((now - heard).total_seconds()) if heard else None,
            "silent": site.status == "enrolled" and (heard is None or now - heard > silent_after),
            "last_study": studies.get(site.name)}
        if report is None:
            rows.append(row | {"health": None, "radflow": None, "drift": [], "plugins": [],
                               "models": [], "pending_approvals": [], "last_job": None,
                               "queue": None, "policy": {}})
            continue
        drift = []
        if _behind(report.radflow, newest_radflow):
            drift.append(f"radflow {report.radflow} < {newest_radflow}")
        plugins = []
        for plugin in report.plugins:
            behind = _behind(plugin.version, newest_plugin.get(plugin.distribution))
            if behind:
                drift.append(f"{plugin.distribution} {plugin.version} < "
                             f"{newest_plugin[plugin.distribution]}")
            plugins.append(plugin.model_dump() | {"behind": behind})
        row |= {"health": report.health.model_dump(), "radflow": report.radflow,
                "radflow_behind": _behind(report.radflow, newest_radflow), "drift": drift,
                "plugins": plugins, "models": [m.model_dump() for m in report.models],
                "approved": len(report.approved),
                "pending_approvals": sorted(name for name, h in newest_flows.items()
                                            if h not in report.approved),
                "last_job": report.last_job.model_dump() if report.last_job else None,
                "queue": report.queue, "policy": report.policy}
        rows.append(row)
    return rows


def _releases_weights(manifest: Any) -> bool:
    schema = manifest.release_schema
    schemas = list(schema.rounds.values()) if schema.rounds else [schema]
    return any(spec.kind == "weights" for s in schemas for spec in s.fields.values())


def newest_version(engine: Engine, name: str) -> Any | None:
    """The newest published version of flow ``name`` (what a study of it runs)."""
    found = [v for v in versions(engine) if v.name == name]
    return found[-1] if found else None


def readiness(engine: Engine, name: str, chosen: list[str] | None = None,
              now: datetime | None = None,
              known: tuple[dict[str, SiteReport], list[dict[str, Any]]] | None = None,
              params: dict[str, Any] | None = None) -> dict[str, Any]:
    """Which of the chosen sites (default: every enrolled one) can run the newest version of
    flow ``name``, from each site's newest fleet report, and why the others cannot.

    Per site: ``can_run`` True, False (a ``blocking`` reason: a radflow or plugin version below
    the version's need, or a plugin pinned exactly and not at that version: the site would
    refuse with ``unsupported_version:<dist>`` or ``missing_plugin:...``), or None (no report
    yet: only the site can tell); ``warnings`` are refusals the site's steward decides
    (``not_approved``, weights its policy forbids) and silence. The site checks again itself.
    ``known``: (:func:`latest_reports`, :func:`fleet`) read once for several flows. A site
    whose policy says ``require_access_request`` can run it only under an access request its
    steward approved for this flow (and the cohort in ``params``, where it names one).
    """
    from radflow.federation.access import cohort_hash
    from radflow.hub.discovery import approved_for

    version = newest_version(engine, name)
    if version is None:
        raise KeyError(name)
    cohort = cohort_hash(params)
    manifest = SignedVersion.model_validate_json(version.signed).manifest
    reports, fleet_rows = known or (latest_reports(engine), fleet(engine, now=now))
    rows = {row["site"]: row for row in fleet_rows}
    enrolled = [s.name for s in sites(engine) if s.status == "enrolled"]
    out = []
    for site in chosen or enrolled:
        report = reports.get(site)
        row = rows.get(site) or {}
        blocking: list[dict[str, str]] = []
        warnings: list[dict[str, str]] = []
        if row.get("silent"):
            heard = row.get("last_heard")
            warnings.append({"code": "silent", "text": "not heard since " + heard if heard
                             else "never heard: its agent has not reported"})
        if report is None:
            warnings.append({"code": "no_report",
                             "text": "no report from its agent yet: the site checks itself"})
            out.append({"site": site, "can_run": None, "radflow": None, "blocking": [],
                        "warnings": warnings})
            continue
        have = {normalize(p.distribution): p.version for p in report.plugins} | {
            "radflow": report.radflow}
        for unmet in unmet_requirements(manifest, have):
            if normalize(unmet.distribution) not in have:
                warnings.append({"code": "unknown", "text": f"needs {unmet.distribution}"
                                 f"{unmet.needs}, which its report does not list: the site "
                                 f"checks it"})
                continue
            blocking.append({"code": unmet.refusal, "text": unmet.message, "fix": unmet.fix})
        for dist, exact in sorted(manifest.plugins.items()):
            if normalize(dist) in have and have[normalize(dist)] != exact:
                blocking.append({"code": f"missing_plugin:{dist}@{exact}",
                                 "text": f"needs {dist} {exact} exactly (has "
                                         f"{have[normalize(dist)]})",
                                 "fix": f"pip install '{dist}=={exact}' at the site"})
        if report.policy.get("require_access_request") and not approved_for(
                engine, site, name, cohort):
            blocking.append({"code": "no_access_request", "text": "its policy runs a study only "
                             "under an access request its steward approved (none covers "
                             f"{name} on this cohort)", "fix": "file an access request "
                             f"(radflow hub access request --flow {name} --sites {site}) and "
                             "wait for the steward's approval"})
        if version.hash not in report.approved:
            warnings.append({"code": "not_approved", "text": "its steward has not approved "
                             "this version: the site refuses it until then"})
        if _releases_weights(manifest) and not report.policy.get("allow_weights", False):
            warnings.append({"code": "policy_violation:weights", "text": "its policy does not "
                             "allow model weights to leave (allow_weights)"})
        out.append({"site": site, "can_run": not blocking, "radflow": report.radflow,
                    "blocking": blocking, "warnings": warnings})
    return {"flow": name, "version": version.hash, "requires": manifest.requires,
            "plugins": manifest.plugins, "sites": out}
