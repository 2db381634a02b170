"""What the tests of tests/test_federation_sites.py compute at the sites themselves, to check
the federated results against: pooled counts and feature tables, the audit log, the site's own
pipeline run; and the sites' logs for a failed study's message. Also the hub's side, for the
tests that kill it (tests/test_hub_faults.py too): its jobs and studies, its processes."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil
from sqlmodel import Session, col, select

from radflow.catalog.db import session_scope
from radflow.catalog.models import AuditEvent, Series
from radflow.cohorts.images import is_image_series
from radflow.cohorts.query import count_series
from radflow.hub.models import HubJob, HubStudy


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


def dump_site_parts(sites) -> None:
    """Ask each site part (a federated-job flow run its agent started) where it is: faulthandler
    writes each thread's stack to the worker's log (flows/federated_job.py). Only those: any
    other flow run (the hub's coordinator, a site's ingest) dies of SIGUSR1."""
    import re
    import signal

    started = set()
    for ctx in sites.values():
        log = ctx.paths.logs / "agent.log"
        if log.exists():
            started |= set(re.findall(r"site part started \(flow run ([0-9a-f-]+)\)",
                                      log.read_text(errors="replace")))
    for proc in psutil.process_iter(["cmdline"]):
        if "prefect.engine" not in " ".join(proc.info["cmdline"] or []):
            continue
        try:
            if proc.environ().get("PREFECT__FLOW_RUN_ID") in started:
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


def poll(condition, timeout: float, what: str, every: float = 0.2):
    """``condition()``'s first truthy value, asked every ``every`` s for ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"gave up waiting for {what} after {timeout:.0f} s")


def hub_jobs(engine, study: str) -> list[HubJob]:
    with Session(engine) as session:
        rows = list(session.exec(select(HubJob).where(HubJob.study_id == study)
                                 .order_by(HubJob.round, HubJob.site)))
        for row in rows:
            session.expunge(row)
        return rows


def newest_study(engine, flow: str, after: datetime) -> str | None:
    with Session(engine) as session:
        row = session.exec(select(HubStudy).where(HubStudy.name == flow)
                           .order_by(col(HubStudy.created_at).desc())).first()
    created = row.created_at.replace(tzinfo=UTC) if row is not None else None
    return row.id if row is not None and created >= after else None


def hub_processes(hub_home: Path) -> dict[str, list[psutil.Process]]:
    """Each hub process (by its PID file) with everything it started."""
    found = {}
    for pidfile in (hub_home / "hub" / "run").glob("*.pid"):
        proc = psutil.Process(json.loads(pidfile.read_text())["pid"])
        found[pidfile.stem] = [proc, *proc.children(recursive=True)]
    return found


def needy_package(folder: Path, name: str, requires: str) -> Path:
    """The cohort count's flow package under another name, declaring ``requires`` (a YAML
    mapping such as ``{radflow: ">=99"}``): a version the sites may be too old for."""
    import shutil

    package = folder / name
    shutil.copytree(Path("federation/flows/federated-cohort-count"), package)
    spec = package / "radflow-flow.yaml"
    text = spec.read_text().replace("name: federated-cohort-count", f"name: {name}")
    lines = [f"requires: {requires}" if line.startswith("requires:") else line
             for line in text.splitlines()]
    spec.write_text("\n".join(lines) + "\n")
    return package
