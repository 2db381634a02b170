"""What the tests of tests/test_federation_sites.py compute at the sites themselves, to check
the federated results against: pooled counts and feature tables, the audit log, the site's own
pipeline run; and the sites' logs for a failed study's message."""

from __future__ import annotations

import json

from sqlmodel import select

from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, Series
from radflow.cohorts.images import is_image_series
from radflow.cohorts.query import count_series


def pooled(ctx, cohort) -> tuple[int, int]:
    with session_scope(ctx.catalog_url) as session:
        images = sum(is_image_series(s.modality, s.manufacturer)  # "series": image series
                     for s in session.exec(select(Series)))
        return images, count_series(session, cohort)


def audit_actions(ctx) -> list[str]:
    with session_scope(ctx.catalog_url) as session:
        return [e.action for e in session.exec(select(AuditEvent).order_by(AuditEvent.seq))]


def quantify(ctx, series_uids: list[str]) -> None:
    """segment-and-quantify (the real model and pyradiomics) on the site's own worker."""
    api = ctx.prefect()
    run = api.create_flow_run(f"segment-and-quantify/{ctx.name}", {
        "site": ctx.name, "series_uids": series_uids, "max_parallel": 2})
    done = api.wait(run.id, timeout=900)
    assert done.ok, (ctx.name, done.state, done.message)


def pooled_table(ctx, cohort, feature: str, segment: str) -> list[tuple[float, Series]]:
    """The site's values of one feature, computed here on its own: the newest result per
    series that is neither rejected nor superseded, over the cohort's series."""
    from radflow.catalog.models import DerivedResult, FeatureValue
    from radflow.cohorts.query import select_series

    with session_scope(ctx.catalog_url) as session:
        chosen = {}
        for series in select_series(session, cohort):
            chosen.setdefault(series.series_uid, series)
        newest: dict[str, tuple[int, float]] = {}
        for value, result in session.exec(select(FeatureValue, DerivedResult).where(
                FeatureValue.result_pk == DerivedResult.id, FeatureValue.feature == feature,
                FeatureValue.segment_label == segment)):
            if value.source_series_uid in chosen and str(result.status) not in (
                    "rejected", "superseded"):
                if result.id >= newest.get(value.source_series_uid, (-1, 0.0))[0]:
                    newest[value.source_series_uid] = (result.id, value.value)
        for series in chosen.values():
            session.expunge(series)
    return [(v, chosen[uid]) for uid, (_, v) in sorted(newest.items())]


def dump_site_parts() -> None:
    """Ask every running site part (federated-job flow run) where it is: faulthandler writes
    each thread's stack to the worker's log (flows/federated_job.py)."""
    import signal

    import psutil

    for proc in psutil.process_iter(["cmdline"]):
        if "prefect.engine" in " ".join(proc.info["cmdline"] or []):
            try:
                proc.send_signal(signal.SIGUSR1)
            except psutil.Error:
                pass


def site_logs(sites, combined: dict) -> str:
    """What a failed study needs to be understood: the result, and each site's agent and
    worker log tails (the sites are gone after the module)."""
    parts = [json.dumps(combined)[:2000]]
    for name, ctx in sites.items():
        for log in ("agent", "worker"):
            path = ctx.paths.root / "logs" / f"{log}.log"
            tail = path.read_text(errors="replace")[-3000:] if path.exists() else "(none)"
            parts.append(f"--- {name} {log} ---\n{tail}")
    return "\n".join(parts)
