"""An export of a cohort: what would leave (the plan), the steward's decision, and the export
itself, from the site's Orthanc through the project's :class:`Deidentifier` to a target.

Each export is a request file under the site's ``export/requests/`` and a line of audit
events: ``export.requested`` (with the plan), ``export.approved`` or ``export.declined`` (the
steward, when the site policy ``export_requires_steward`` is on, as it is by default),
``export.started`` *before* the first file is written, and ``export.done`` (the number of
files, the manifest's hash) or ``export.failed``. The pseudonym pairs an export made stay at
the site, encrypted (:mod:`radflow.export.mapping`).

Targets: ``folder:PATH`` (a DICOM set and its manifest), ``zip:PATH`` (the same, in one zip),
``dicomweb:URL`` (STOW-RS to another server, e.g. a partner's Orthanc; its user and password
from ``RADFLOW_EXPORT_USERNAME`` and ``RADFLOW_EXPORT_PASSWORD``, never on the command line).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from radflow.errors import ConfigurationError, NotFound, PolicyViolation
from radflow.export import projects
from radflow.export.workers import WORKERS, write
from radflow.export.writer import finish, manifest_hash

STATES = ("waiting", "approved", "declined", "running", "done", "failed")


@dataclass(frozen=True)
class Target:
    kind: str  # folder, zip or dicomweb
    where: str

    @classmethod
    def parse(cls, text: str) -> Target:
        if text == "outbox":  # a zip kept at the site, downloaded from the web app
            return cls("outbox", "")
        kind, sep, where = text.partition(":")
        if sep and kind in ("folder", "zip", "dicomweb") and where:
            return cls(kind, where)
        if text.startswith(("http://", "https://")):
            return cls("dicomweb", text)
        if text and "://" not in text:
            return cls("zip" if text.endswith(".zip") else "folder", text)
        raise ConfigurationError(f"export target {text!r} is not a folder, a zip or a DICOMweb URL",
                                 fix="use folder:PATH, zip:PATH.zip or dicomweb:URL")

    def __str__(self) -> str:
        return "outbox" if self.kind == "outbox" else f"{self.kind}:{self.where}"


def outbox_zip(root: Path, export_id: str) -> Path:
    """Where an ``outbox`` export's zip waits for its download."""
    return root / "export" / "outbox" / f"{export_id}.zip"


def requests_dir(root: Path) -> Path:
    return root / "export" / "requests"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def plan(catalog_url: str, cohort: str) -> dict[str, Any]:
    """What an export of ``cohort`` takes: its image series and their current SEG and SR
    results (the objects in Orthanc), with counts by modality."""
    from sqlmodel import col, select

    from radflow.catalog.db import session_scope
    from radflow.catalog.models import DerivedResult
    from radflow.cohorts.definition import in_words
    from radflow.cohorts.query import select_series
    from radflow.cohorts.store import load_cohort
    from radflow.enums import ResultKind
    from radflow.results.current import current_result_ids

    with session_scope(catalog_url) as session:
        definition, _ = load_cohort(session, cohort)
        series = select_series(session, definition)
        uids = [s.series_uid for s in series]
        results = list(session.exec(select(DerivedResult).where(
            col(DerivedResult.id).in_(current_result_ids(uids)),
            col(DerivedResult.kind).in_([ResultKind.SEG, ResultKind.SR]),
            col(DerivedResult.orthanc_id).is_not(None)))) if uids else []
        images = [{"orthanc_id": s.orthanc_id, "series_uid": s.series_uid,
                   "modality": s.modality or "", "instances": s.num_instances or 0} for s in series]
        objects = [{"orthanc_instance": r.orthanc_id, "kind": str(r.kind.value),
                    "source_series_uid": r.source_series_uid, "status": str(r.status.value)}
                   for r in results]
        words = in_words(definition.where)
        cohort_hash = definition.content_hash
    by_modality: dict[str, int] = {}
    for image in images:
        by_modality[image["modality"]] = by_modality.get(image["modality"], 0) + 1
    return {"cohort": cohort, "cohort_in_words": words, "cohort_hash": cohort_hash,
            "series": images, "results": objects, "by_modality": by_modality,
            "instances": sum(i["instances"] for i in images) + len(objects)}


def request(root: Path, catalog_url: str, *, project: str, cohort: str, target: str,
            actor: str, requires_steward: bool, origin: str = "cli") -> dict[str, Any]:
    """File an export request (audited with its plan); approved at once where the policy
    does not ask for a steward."""
    from radflow.audit import record

    chosen = projects.load(root, project)
    where = Target.parse(target)
    what = plan(catalog_url, cohort)
    if not what["series"]:
        raise ConfigurationError(f"cohort {cohort!r} holds no series", fix="export a cohort "
                                 "that matches something (`radflow cohort show NAME`)")
    entry = {"id": uuid.uuid4().hex[:12], "project": project, "options": chosen.options,
             "purpose": chosen.purpose, "target": str(where), "requested_by": actor,
             "requested_at": _now(), "state": "waiting", "plan": what, "decided_by": None,
             "reason": "", "result": None, "origin": origin, "progress": 0}
    record(catalog_url, actor=actor, action="export.requested", subject=f"export:{entry['id']}",
           detail=_summary(entry))
    if not requires_steward:
        entry.update(state="approved", decided_by="policy",
                     reason="export_requires_steward is off")
    _save(root, entry)
    return entry


def _summary(entry: dict[str, Any]) -> dict[str, Any]:
    what = entry["plan"]
    return {"project": entry["project"], "options": entry["options"], "target": entry["target"],
            "cohort": what["cohort"], "cohort_hash": what["cohort_hash"],
            "series": len(what["series"]), "results": len(what["results"]),
            "instances": what["instances"]}


def _save(root: Path, entry: dict[str, Any]) -> None:
    folder = requests_dir(root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{entry['id']}.json"
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(entry, indent=1) + "\n")
    partial.replace(path)


def load(root: Path, export_id: str) -> dict[str, Any]:
    path = requests_dir(root) / f"{export_id}.json"
    if not export_id.isalnum() or not path.is_file():
        raise NotFound(f"no export {export_id!r} at this site",
                       fix="list them with `radflow export list`")
    return json.loads(path.read_text())


def listing(root: Path) -> list[dict[str, Any]]:
    entries = [json.loads(p.read_text()) for p in requests_dir(root).glob("*.json")]
    return sorted(entries, key=lambda e: e["requested_at"], reverse=True)


def decide(root: Path, catalog_url: str, export_id: str, *, approve: bool, actor: str,
           reason: str = "") -> dict[str, Any]:
    """The steward's decision, audited first; a decline needs a reason."""
    from radflow.audit import record

    entry = load(root, export_id)
    if entry["state"] not in ("waiting", "approved"):
        raise PolicyViolation(f"export {export_id} is {entry['state']}: it cannot be decided now",
                              fix="file a new export request")
    if not approve and not reason.strip():
        raise ConfigurationError("a decline needs a reason", fix="pass --reason TEXT")
    action = "export.approved" if approve else "export.declined"
    record(catalog_url, actor=actor, action=action, subject=f"export:{export_id}",
           detail={**_summary(entry), "reason": reason})
    entry.update(state="approved" if approve else "declined", decided_by=actor, reason=reason,
                 decided_at=_now())
    _save(root, entry)
    return entry


def _instances(orthanc: Any, entry: dict[str, Any]) -> list[str]:
    ids: list[str] = []
    for image in entry["plan"]["series"]:
        ids += orthanc.series_instances(image["orthanc_id"])
    return ids + [r["orthanc_instance"] for r in entry["plan"]["results"]]


def _alive(runner: dict[str, Any] | None) -> bool:
    """Whether the process that runs an export is alive (another host's: assumed alive)."""
    import psutil

    if not runner:
        return False
    if runner.get("host") != socket.gethostname():
        return True
    try:
        return psutil.Process(int(runner["pid"])).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _progress(root: Path, entry: dict[str, Any], done: int) -> None:
    entry["progress"] = done
    _save(root, entry)


def execute(root: Path, catalog_url: str, orthanc: Any, export_id: str, *,
            actor: str) -> dict[str, Any]:
    """Run an approved export to its target; returns the request with its result. An export
    that failed, or whose process died while it ran, runs again under the same approval.

    Raises:
        PolicyViolation: the export is not approved (waiting, declined, done already), or it
            runs in a live process now.
    """
    from radflow.audit import record
    from radflow.export.mapping import remember

    entry = load(root, export_id)
    if entry["state"] == "running" and _alive(entry.get("runner")):
        raise PolicyViolation(f"export {export_id} is running (process "
                              f"{entry['runner']['pid']} on {entry['runner']['host']})",
                              fix="wait for it: `radflow export show ID`")
    if entry["state"] not in ("approved", "failed", "running"):
        fix = ("a data steward approves it: `radflow export approve ID`"
               if entry["state"] == "waiting" else "file a new export request")
        raise PolicyViolation(f"export {export_id} is {entry['state']}, not approved", fix=fix)
    target = Target.parse(entry["target"])
    chosen = projects.load(root, entry["project"])
    deid = chosen.deidentifier(root)
    if target.kind == "folder" and Path(target.where).exists() and any(Path(target.where).iterdir()):
        raise ConfigurationError(f"{target.where} is not empty" + (
            " (what an interrupted run of this export wrote?)" if entry["state"] != "approved"
            else ""), fix="export to an empty or new folder: empty this one")
    subject = f"export:{export_id}"
    record(catalog_url, actor=actor, action="export.started", subject=subject,
           detail=_summary(entry))
    entry.update(state="running", started_at=_now(),
                 runner={"pid": os.getpid(), "host": socket.gethostname()})
    _save(root, entry)
    staging = Path(target.where) if target.kind == "folder" else \
        Path(tempfile.mkdtemp(prefix=f"export-{export_id}-", dir=_staging_root(root)))
    try:
        ids = _instances(orthanc, entry)
        entry["total"] = len(ids)
        report = write(ids, deid, staging, orthanc.credentials(),
                       WORKERS if len(ids) >= 50 else 1,
                       progress=lambda done: _progress(root, entry, done))
        manifest = finish(report, deid, staging, entry["plan"]["cohort_hash"], entry["project"])
        digest = manifest_hash(staging)
        remember(root, chosen.name, export_id, report.patients)
        if target.kind in ("zip", "outbox"):
            _zip(staging, Path(target.where) if target.kind == "zip"
                 else outbox_zip(root, export_id))
        elif target.kind == "dicomweb":
            _stow(staging, manifest, target.where)
    except Exception as exc:
        record(catalog_url, actor=actor, action="export.failed", subject=subject,
               detail={"error": str(exc)[:500]})
        entry.update(state="failed", error=str(exc)[:2000], finished_at=_now())
        _save(root, entry)
        raise
    finally:
        if target.kind != "folder":
            shutil.rmtree(staging, ignore_errors=True)
    held = [{"series_uid": h.series_uid, "modality": h.modality, "reason": h.reason,
             "instances": h.instances} for h in report.held.values()]
    result = {"instances": report.instances, "series": manifest["series"],
              "patients": manifest["patients"], "manifest_sha256": digest, "held_back": held}
    record(catalog_url, actor=actor, action="export.done", subject=subject,
           detail={**_summary(entry), **{k: v for k, v in result.items() if k != "held_back"},
                   "held_back": len(held)})
    entry.update(state="done", result=result, finished_at=_now(), progress=len(ids))
    _save(root, entry)
    return entry


def _staging_root(root: Path) -> Path:
    folder = root / "export" / "staging"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _zip(folder: Path, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    with zipfile.ZipFile(partial, "w", zipfile.ZIP_STORED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, file.relative_to(folder).as_posix())
    partial.replace(path)


def _stow(folder: Path, manifest: dict[str, Any], url: str, batch: int = 50) -> None:
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    user, password = os.environ.get("RADFLOW_EXPORT_USERNAME"), \
        os.environ.get("RADFLOW_EXPORT_PASSWORD")
    if user:
        session.auth = (user, password or "")
    client = DICOMwebClient(url=url.rstrip("/"), session=session)
    import pydicom

    files = [folder / f["path"] for f in manifest["files"]]
    for start in range(0, len(files), batch):
        datasets = [pydicom.dcmread(p) for p in files[start:start + batch]]
        try:
            answer = client.store_instances(datasets=datasets)
        except requests.RequestException as exc:
            raise ConfigurationError(f"STOW-RS to {url} failed: {exc}",
                                     fix="check the URL and RADFLOW_EXPORT_USERNAME and "
                                         "RADFLOW_EXPORT_PASSWORD") from exc
        failed = answer.get("FailedSOPSequence", []) if answer else []
        if failed:
            raise ConfigurationError(f"{url} refused {len(failed)} instance(s)",
                                     fix="read the receiving server's log")


def start_on_worker(ctx: Any, export_id: str) -> str:
    """Start the approved export on the site's worker (deployment ``export-cohort/SITE``, the
    export's id its idempotency key: one run per export); returns the flow run's id."""
    started = ctx.prefect().create_flow_run(
        f"export-cohort/{ctx.name}", {"export_id": export_id, "site": ctx.name},
        idempotency_key=f"export-{export_id}", tags=("radflow", "export", f"export:{export_id}"))
    return str(started.id)
