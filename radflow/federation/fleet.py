"""What a site tells its hub about itself (phase 13's fleet): its agent posts this report on
its authenticated channel when it starts and every :data:`REPORT_SECONDS` after, so that the
hub's operator sees every site's versions and health without asking its IT.

The report holds software and configuration only, never data: radflow's version and every
plugin's name, version and distribution hash; the installed model versions; the approved flow
and model versions (hashes); the policy's settings (what its gate applies: the same summary a
release carries); each component's state from `radflow site status` (name, state, restarts:
not its detail line, which may name hosts and paths); the last job (its hub id, study, state);
and the number of jobs in flight. Nothing in it counts patients, series or instances.

    report = site_report(ctx)      # the agent posts it to /v1/sites/NAME/report
"""

from __future__ import annotations

import hashlib
from importlib.metadata import PackageNotFoundError, distribution
from typing import Any

REPORT_SECONDS = 60.0  # between two reports of a running agent
IN_FLIGHT = ("received", "running", "pending_release", "sending")  # a job's states until posted


def distribution_hash(name: str) -> str | None:
    """``sha256:`` of a distribution's RECORD (the list of its files with their own hashes):
    two sites with the same hash run the same files; None where there is no RECORD."""
    try:
        record = distribution(name).read_text("RECORD")
    except PackageNotFoundError:
        return None
    return "sha256:" + hashlib.sha256(record.encode()).hexdigest() if record else None


def plugin_versions() -> list[dict[str, Any]]:
    """Every plugin of the ``radflow.plugins`` group, loaded or not, with its distribution
    (radflow's own flows, the ``core`` plugin, are radflow's version)."""
    from radflow.plugins.registry import discover

    return [{"name": p.name, "distribution": p.distribution, "version": p.version,
             "hash": distribution_hash(p.distribution), "loaded": p.error is None}
            for p in discover() if p.distribution != "radflow"]  # (its own: the version)


def installed_models() -> list[dict[str, Any]]:
    """The nnU-Net plugin's models (its own and installed versions), where it is installed:
    name, version, and the hub's model version hash for those installed from the hub."""
    try:
        from radflow_nnunet.models import list_models
    except ImportError:
        return []
    return [{"name": m.name, "version": m.version, "builtin": m.builtin,
             "model_version": m.card.get("model_version")} for m in list_models()]


def component_health(ctx: Any) -> dict[str, Any]:
    """The site's state and each component's, as `radflow site status` probes them."""
    from radflow.site import SiteManager

    status = SiteManager().status(ctx.name)
    return {"state": status.state,
            "components": [{"name": c.name, "state": c.state, "restarts": c.restarts}
                           for c in status.components]}


def last_jobs(catalog_url: str) -> tuple[dict[str, Any] | None, int]:
    """The newest job (hub id, study, state, when it last moved) and how many are in flight."""
    from sqlmodel import func, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import FederationJob

    with session_scope(catalog_url) as session:
        newest = session.exec(select(FederationJob)
                              .order_by(FederationJob.received_at.desc()).limit(1)).first()
        queue = session.exec(select(func.count()).select_from(FederationJob)
                             .where(FederationJob.state.in_(IN_FLIGHT))).one()
        last = None if newest is None else {
            "id": newest.id, "study": newest.study, "state": newest.state,
            "outcome": newest.outcome, "updated_at": newest.updated_at.isoformat()}
    return last, int(queue)


def site_report(ctx: Any) -> dict[str, Any]:
    """The report of the site ``ctx`` (a SiteContext), as its agent posts it."""
    from radflow import __version__
    from radflow.federation.policy import load_policy

    policy = load_policy(ctx.paths.root)
    last, queue = last_jobs(ctx.catalog_url)
    return {"radflow": __version__,
            "plugins": plugin_versions(),
            "models": installed_models(),
            "approved": list(policy.approved),
            "approved_models": list(policy.approved_models),
            "policy": policy.summary(fleet=True),
            "health": component_health(ctx),
            "last_job": last,
            "queue": queue}
